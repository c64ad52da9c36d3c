package integration

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// TestClientLabelsCapped: 1,050 distinct verified clients (signed keys)
// each send a metered request through a real Caddy. The per-client
// metrics keep their own series for the first 1,000 clients and count
// the other 50 under "other": however many sandboxes a fleet runs, the
// metrics registry stays bounded, and no request is lost from the
// totals.
func TestClientLabelsCapped(t *testing.T) {
	t.Parallel()
	const clients, capped = 1050, 1000
	apiKey := newAPIKey()
	gw := newFakeGateway(t, nil, apiKey)
	p, secret := signedKeysProxy(t, gw.URL(), apiKey, "usage_metrics")
	tc := newTestClient(t)

	// eight at a time: one request per client, so which ones fall
	// beyond the cap does not change the counts
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range clients {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			res, err := tc.tryChat(p.URL, signedClientKey(fmt.Sprintf("sandbox-%04d", i), secret))
			if err != nil {
				t.Error(err)
			} else if res.Status != http.StatusOK {
				t.Errorf("client %d: status %d: %s", i, res.Status, res.Body)
			}
		})
	}
	wg.Wait()

	labels, total, other := 0, 0.0, 0.0
	for series, v := range scrapeMetrics(t, p) {
		if !strings.HasPrefix(series, "caddy_ai_gateway_auth_client_requests_total{") {
			continue
		}
		labels++
		total += v
		if series == `caddy_ai_gateway_auth_client_requests_total{client="other"}` {
			other = v
		}
	}
	if labels != capped+1 {
		t.Errorf("%d client label values, want %d: %d clients and \"other\"", labels, capped+1, capped)
	}
	if total != clients || other != clients-capped {
		t.Errorf("client_requests_total: %v in all, %v under \"other\"; want %d and %d", total, other, clients, clients-capped)
	}
}
