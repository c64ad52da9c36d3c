package replay

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// unwrapOnly hides the recorder's Flush behind Unwrap, as Caddy's own
// response writer wrappers do.
type unwrapOnly struct{ rec *httptest.ResponseRecorder }

func (u unwrapOnly) Header() http.Header         { return u.rec.Header() }
func (u unwrapOnly) Write(p []byte) (int, error) { return u.rec.Write(p) }
func (u unwrapOnly) WriteHeader(s int)           { u.rec.WriteHeader(s) }
func (u unwrapOnly) Unwrap() http.ResponseWriter { return u.rec }

// A flush through the replay wrapper must reach the client even when the
// writer below only offers Flush through Unwrap: otherwise SSE through an
// OIDC source arrives all at once at the end of the stream.
func TestInterceptWriterFlushesThroughUnwrap(t *testing.T) {
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", http.NoBody)
	a := Begin(unwrapOnly{rec}, req, 1024, NewBudget(0, 1024))
	defer a.End()

	a.rw.WriteHeader(http.StatusOK)
	if _, err := a.rw.Write([]byte("data: 1\n\n")); err != nil {
		t.Fatal(err)
	}
	if err := http.NewResponseController(&a.rw).Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if !rec.Flushed {
		t.Fatal("the flush did not reach the writer below")
	}

	// a held 401 is never flushed to the client
	rec2 := httptest.NewRecorder()
	b := Begin(unwrapOnly{rec2}, req, 1024, NewBudget(0, 1024))
	defer b.End()
	b.rw.WriteHeader(http.StatusUnauthorized)
	b.rw.Flush()
	if rec2.Flushed {
		t.Fatal("a held 401 was flushed")
	}
}
