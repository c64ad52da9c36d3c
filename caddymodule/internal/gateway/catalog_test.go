package gateway

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
)

func readTestCatalog(t *testing.T) *Catalog {
	t.Helper()
	f, err := os.Open("testdata/catalog.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c, err := ParseCatalog(f)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestParseCatalogRecordedShape(t *testing.T) {
	c := readTestCatalog(t)
	if c.Len() != 7 || c.Skipped() != 6 {
		t.Fatalf("models %d, skipped %d; want 7 and 6", c.Len(), c.Skipped())
	}
	for _, tc := range []struct {
		id   string
		want Model
	}{
		{"deepseek/deepseek-v3.2", Model{ID: "deepseek/deepseek-v3.2", Type: "language", MaxTokens: 8000, ContextWindow: 128000,
			// No cache-write price: the input price.
			Prices: Prices{Input: 0.00000028, Output: 0.00000042, CacheRead: 0.000000028, CacheWrite: 0.00000028, HasTokenPrices: true}}},
		{"anthropic/claude-haiku-4.5", Model{ID: "anthropic/claude-haiku-4.5", Type: "language", MaxTokens: 64000, ContextWindow: 200000,
			Prices: Prices{Input: 0.000001, Output: 0.000005, CacheRead: 0.0000001, CacheWrite: 0.00000125, HasTokenPrices: true}}},
		// Pricing keys of other shapes (objects, arrays) are ignored.
		{"openai/gpt-5-mini", Model{ID: "openai/gpt-5-mini", Type: "language", MaxTokens: 128000, ContextWindow: 400000,
			Prices: Prices{Input: 0.00000025, Output: 0.000002, CacheRead: 0.000000025, CacheWrite: 0.00000025, HasTokenPrices: true}}},
		// An embedding model has an input price only: its output is free.
		{"openai/text-embedding-3-small", Model{ID: "openai/text-embedding-3-small", Type: "embedding", ContextWindow: 8192,
			Prices: Prices{Input: 0.00000002, CacheRead: 0.00000002, CacheWrite: 0.00000002, HasTokenPrices: true}}},
		// Image models: no token prices at all.
		{"google/imagen-4.0-generate-001", Model{ID: "google/imagen-4.0-generate-001", Type: "image"}},
		{"bfl/flux-pro-1.1", Model{ID: "bfl/flux-pro-1.1", Type: "image"}},
	} {
		got, ok := c.Model(tc.id)
		if !ok || got != tc.want {
			t.Errorf("Model(%q) = %+v, %v; want %+v", tc.id, got, ok, tc.want)
		}
	}
	for _, id := range []string{"acme/broken-price", "acme/nan-price", "acme/bad-cap", ""} {
		if _, ok := c.Model(id); ok {
			t.Errorf("malformed entry %q was kept", id)
		}
	}
	// The first of two entries with one id is kept.
	if m, _ := c.Model("deepseek/deepseek-v3.2"); m.Prices.Input != 0.00000028 {
		t.Errorf("duplicate entry replaced the first: %+v", m)
	}
	want := Prices{Input: 0.000015, Output: 0.000075, CacheRead: 0.0000015, CacheWrite: 0.00001875, HasTokenPrices: true}
	if h := c.Highest(); h != want {
		t.Errorf("Highest() = %+v, want %+v", h, want)
	}
	if !c.Fetched().IsZero() {
		t.Errorf("a parsed catalog has a fetch time: %v", c.Fetched())
	}
}

func TestParseCatalogRefuses(t *testing.T) {
	priced := `{"id":"a/b","type":"language","pricing":{"input":"0.000001","output":"0.000002"}}`
	for name, body := range map[string]string{
		"empty":             ``,
		"not an object":     `[]`,
		"no data":           `{"object":"list"}`,
		"data not a list":   `{"data":{}}`,
		"no models":         `{"data":[]}`,
		"only malformed":    `{"data":[{"id":""},{"id":"x","pricing":{"input":"inf","output":"1"}}]}`,
		"no token prices":   `{"data":[{"id":"img","type":"image","pricing":{"image":"0.04"}}]}`,
		"only output price": `{"data":[{"id":"x","type":"language","pricing":{"output":"0.1"}}]}`,
		"data twice":        `{"data":[` + priced + `],"data":[` + priced + `]}`,
		"truncated":         `{"data":[` + priced,
		"trailing data":     `{"data":[` + priced + `]} {}`,
		"syntax error":      `{"data":[` + priced + `,}]}`,
	} {
		t.Run(name, func(t *testing.T) {
			if c, err := ParseCatalog(strings.NewReader(body)); err == nil {
				t.Fatalf("accepted: %d models", c.Len())
			}
		})
	}
}

func TestParseCatalogIgnoresUnknownMembers(t *testing.T) {
	body := `{"object":"list","extra":{"nested":[1,2,{"x":null}]},"data":[
		{"id":"a/b","type":"language","future":{"x":[1]},"max_tokens":null,"pricing":{"input":"0.000001","output":2e-6,"input_cache_read":null,"web_search":{"per_call":"0.01"}}}
	],"has_more":false}`
	c, err := ParseCatalog(strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	m, ok := c.Model("a/b")
	want := Prices{Input: 0.000001, Output: 0.000002, CacheRead: 0.000001, CacheWrite: 0.000001, HasTokenPrices: true}
	if !ok || m.Prices != want || m.MaxTokens != 0 {
		t.Fatalf("got %+v, %v", m, ok)
	}
}

func TestParseCatalogBounds(t *testing.T) {
	entry := `{"id":"m/%d","type":"language","pricing":{"input":"0.000001","output":"0.000002"}}`
	list := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"data":[`)
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, entry, i)
		}
		b.WriteString(`]}`)
		return b.String()
	}
	ten := list(10)
	if c, err := parseCatalog(strings.NewReader(ten), int64(len(ten)), 10); err != nil || c.Len() != 10 {
		t.Fatalf("at both bounds: %v", err)
	}
	if _, err := parseCatalog(strings.NewReader(ten), int64(len(ten)-1), 10); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("a byte over: err = %v", err)
	}
	if _, err := parseCatalog(strings.NewReader(ten), int64(len(ten)), 9); err == nil || !strings.Contains(err.Error(), "more than 9 models") {
		t.Fatalf("a model over: err = %v", err)
	}
	// An endless entry is cut at the bound, not read whole.
	endless := io.MultiReader(strings.NewReader(`{"data":[{"id":"`), &repeatReader{b: 'x', n: 1 << 40})
	if _, err := parseCatalog(endless, 1<<20, 10); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("endless: err = %v", err)
	}
	if maxCatalogBytes != 32<<20 || maxCatalogModels != 100_000 {
		t.Fatal("ParseCatalog's bounds are 32 MiB and 100,000 models")
	}
}

// repeatReader gives n copies of b.
type repeatReader struct {
	b byte
	n int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := min(len(p), r.n)
	for i := range k {
		p[i] = r.b
	}
	r.n -= k
	return k, nil
}
