package caddymodule

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Over HTTP/2 the transport writes the request body in its own goroutine
// and, when the upstream answers before reading it all, closes the body
// from another goroutine and may read it once more after that. Requests
// whose upstream answers at once (200 or 401) run concurrently with ones
// that are read whole and with replays: under -race, no access to a body
// races, each replay carries its own whole body, and no request's bytes
// show up in another's.
func TestReplayHTTP2ReadsAfterClose(t *testing.T) {
	// room for every copy: the budget has tests of its own
	rig := newReplayRig(t, func(h *Handler) { h.RetryMemoryLimit = 64 << 20 })
	var mu sync.Mutex
	refused := map[string]bool{rig.first: true}
	var h2 bool
	refusals := 0
	upstream := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		mu.Lock()
		h2 = h2 || r.ProtoMajor == 2
		// only the replay rounds' requests are refused, never the others
		refuse := refused[token] && r.URL.Query().Get("refuse") == "1"
		if refuse {
			refusals++
		}
		mu.Unlock()
		switch {
		case refuse:
			w.WriteHeader(http.StatusUnauthorized) // at once, the body unread
		case r.URL.Query().Get("early") == "1":
			w.WriteHeader(http.StatusOK) // at once, the body unread
			io.WriteString(w, "early")
		default:
			body, err := io.ReadAll(r.Body)
			if err != nil {
				w.WriteHeader(http.StatusBadGateway)
				return
			}
			w.WriteHeader(http.StatusOK)
			w.Write(body)
		}
	}))
	upstream.EnableHTTP2 = true
	upstream.StartTLS()
	defer upstream.Close()
	target, _ := url.Parse(upstream.URL)
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: upstream.Client().Transport,
	}
	next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		proxy.ServeHTTP(w, r)
		return nil
	})
	// each request's body is its own: a byte from another would show
	bodyFor := func(i, size int) string {
		return strings.Repeat(fmt.Sprintf("%07d;", i), size/8)
	}

	var wg sync.WaitGroup
	for g := range 3 { // early answers and whole reads, alongside the replays
		wg.Go(func() {
			for i := range 10 {
				id := g*100 + i
				early := i%2 == 0
				body := bodyFor(id, 512<<10)
				path := "/v1/chat/completions"
				if early {
					path += "?early=1"
				}
				w := httptest.NewRecorder()
				if err := rig.h.ServeHTTP(w, rig.request(path, strings.NewReader(body)), next); err != nil {
					t.Error(err)
				}
				want := body
				if early {
					want = "early"
				}
				if w.Code != http.StatusOK || w.Body.String() != want {
					t.Errorf("request %d (early %v): status %d, %d bytes, want 200 and %d bytes", id, early, w.Code, w.Body.Len(), len(want))
				}
			}
		})
	}
	for i := range 6 { // replays: the first attempt's body is cut short by a 401
		body := bodyFor(1000+i, 256<<10)
		w := httptest.NewRecorder()
		if err := rig.h.ServeHTTP(w, rig.request("/v1/chat/completions?refuse=1", strings.NewReader(body)), next); err != nil {
			t.Fatal(err)
		}
		if w.Code != http.StatusOK || !bytes.Equal(w.Body.Bytes(), []byte(body)) {
			t.Fatalf("replay %d: status %d, %d bytes, want 200 and the %d-byte body", i, w.Code, w.Body.Len(), len(body))
		}
		// the fresh token is refused too, for the next round
		minted := rig.mintedTokens()
		mu.Lock()
		refused[minted[len(minted)-1]] = true
		mu.Unlock()
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if !h2 {
		t.Fatal("the upstream was not reached over HTTP/2")
	}
	if refusals != 6 {
		t.Errorf("the upstream refused %d requests, want 6 (one per replay round)", refusals)
	}
}
