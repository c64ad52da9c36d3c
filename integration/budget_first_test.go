package integration

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBudgetUSDFirstRequest: under a dollar limit, the first generation
// after a start waits for the proxy's first read of the catalog (which
// that request starts) and is served, instead of a 503 while the read is
// under way; with a gateway whose catalog cannot be read, it is refused
// 503 catalog_unavailable (after that read failed, not after
// credential_wait) with Retry-After.
func TestBudgetUSDFirstRequest(t *testing.T) {
	t.Parallel()
	if nearUTCMidnight(time.Now()) {
		t.Skip("UTC midnight is within 2 minutes")
	}
	apiKey := newAPIKey()

	t.Run("the first request is served", func(t *testing.T) {
		gw := newFakeGateway(t, nil, apiKey)
		p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("gateway %s\n\t\tlimits {\n\t\t\tusd_per_day 5\n\t\t}", gw.URL()))
		if n := len(gw.CatalogFetches()); n != 0 {
			t.Fatalf("the catalog was read %d times before any request", n)
		}
		res := newTestClient(t).do(t, http.MethodPost, p.URL+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer " + signedClientKey("first", secret)}, chatBody)
		if res.Status != http.StatusOK {
			t.Fatalf("the first request under usd_per_day: status %d: %s", res.Status, res.Body)
		}
		if n := len(gw.CatalogFetches()); n != 1 {
			t.Fatalf("catalog fetches: %d, want the one the first request started", n)
		}
	})

	t.Run("a catalog that cannot be read", func(t *testing.T) {
		gw := newFakeGateway(t, nil, apiKey)
		gw.SetCatalogFailure(catalogError)
		// credential_wait far above any test timeout: the refusal must come
		// from the failed read, not from the wait running out
		p, secret := signedKeysProxy(t, gw.URL(), apiKey, fmt.Sprintf("gateway %s\n\t\tcredential_wait 10m\n\t\tlimits {\n\t\t\tusd_per_day 5\n\t\t}", gw.URL()))
		res := newTestClient(t).do(t, http.MethodPost, p.URL+"/v1/chat/completions",
			map[string]string{"Authorization": "Bearer " + signedClientKey("first", secret)}, chatBody)
		if res.Status != http.StatusServiceUnavailable || !strings.Contains(string(res.Body), `"catalog_unavailable"`) || res.Header.Get("Retry-After") == "" {
			t.Fatalf("status %d, Retry-After %q: %s", res.Status, res.Header.Get("Retry-After"), res.Body)
		}
		if n := len(gw.Billed()); n != 0 {
			t.Fatalf("the gateway got %d generations", n)
		}
	})
}
