package caddymodule

import (
	"fmt"
	"testing"
	"time"
)

// The ledger's bound forgets the clients with nothing counted first,
// then the least recently seen under every limit, and never a client
// over a daily limit before its day ends: a client far over
// tokens_per_day that idles while new clients arrive is still refused.
// When every client held is over a daily limit, a new client is refused
// (too_many_clients) rather than tracked past the bound.
func TestLedgerKeepsClientsOverALimit(t *testing.T) {
	l := newLedger()
	s := &spend{}
	lim := Limits{TokensPerDay: 100, RequestsPerMinute: 1000, MaxClients: 20}
	l.register(s, lim)
	now := time.Date(2026, 12, 4, 10, 0, 0, 0, time.UTC)

	// hog is over its tokens today, then idles
	if refused, _ := l.admit("hog", lim, now); refused != "" {
		t.Fatal(refused)
	}
	l.record("hog", usage{input: 5000}, now)
	// under is counted but under every limit; idle has nothing counted
	l.admit("under", lim, now)
	l.record("under", usage{input: 10}, now)
	l.record("idle", usage{}, now)

	// 200 new clients arrive over the next minutes, each with a request
	for i := range 200 {
		now = now.Add(time.Second)
		if refused, _ := l.admit(fmt.Sprintf("new-%d", i), lim, now); refused != "" {
			t.Fatalf("new client %d refused: %s", i, refused)
		}
		if len(l.clients) > lim.MaxClients {
			t.Fatalf("the ledger holds %d clients, over its bound %d", len(l.clients), lim.MaxClients)
		}
	}
	if _, ok := l.clients["idle"]; ok {
		t.Error("a client with nothing counted was kept while counted ones were forgotten")
	}
	if refused, retry := l.admit("hog", lim, now); refused != limitTokensPerDay || retry <= 0 {
		t.Errorf("the client over tokens_per_day was forgotten: admit says %q, %v", refused, retry)
	}

	// at midnight its day ends: it may be forgotten, and is admitted again
	midnight := time.Date(2026, 12, 5, 0, 0, 1, 0, time.UTC)
	if refused, _ := l.admit("hog", lim, midnight); refused != "" {
		t.Errorf("after midnight UTC: %q", refused)
	}

	// a ledger full of clients over a daily limit refuses a new client
	full := newLedger()
	full.register(s, lim)
	day := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	for i := range lim.MaxClients {
		full.record(fmt.Sprintf("over-%d", i), usage{output: 100}, day)
	}
	refused, retry := full.admit("newcomer", lim, day)
	if refused != limitTooManyClients || retry != 12*time.Hour {
		t.Errorf("a new client in a ledger full of clients over a limit: %q, %v; want %s until midnight", refused, retry, limitTooManyClients)
	}
	if len(full.clients) != lim.MaxClients {
		t.Errorf("the full ledger holds %d clients", len(full.clients))
	}
	for i := range lim.MaxClients {
		if refused, _ := full.admit(fmt.Sprintf("over-%d", i), lim, day); refused != limitTokensPerDay {
			t.Fatalf("over-%d forgotten: %q", i, refused)
		}
	}
}
