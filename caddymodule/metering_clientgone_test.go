package caddymodule

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"testing/synctest"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// A client whose request ends (its context cancelled, as net/http does
// when the client hangs up) right after the finish_reason chunk, while
// the upstream is quiet, does not cancel the upstream read: the usage
// chunk that the upstream sends later is read and charged exactly, with
// no estimate. Before the finish_reason, the same hang-up cancels the
// upstream at once and is charged an estimate. On synctest's clock, so
// the order is exact: the proxy has done all it does about the hang-up
// before the upstream says anything more.
func TestClientContextEndsWhileUpstreamQuiet(t *testing.T) {
	for _, tc := range []struct {
		name      string
		quietFrom int // the chunk the upstream waits before
		wantUsage bool
	}{
		{"after finish_reason", 3, true},
		{"mid-stream", 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := spendHandler(t, func(h *Handler) { h.UsageMetrics = true })
				before := counterValue(usageEstimatesTotal.WithLabelValues("client_gone"))
				r := chatRequest(t, "quiet", `{"stream":true}`)
				ctx, hangUp := context.WithCancel(r.Context())
				r = r.WithContext(ctx)

				quiet, speak := make(chan struct{}), make(chan struct{})
				var upstreamCancelled bool
				written := 0
				next := caddyhttp.HandlerFunc(func(w http.ResponseWriter, ur *http.Request) error {
					_, _ = io.ReadAll(ur.Body)
					w.Header().Set("Content-Type", "text/event-stream")
					for i, c := range chatChunks {
						if i == tc.quietFrom {
							close(quiet)
							select {
							case <-speak:
							case <-ur.Context().Done():
								upstreamCancelled = true
								return ur.Context().Err()
							}
						}
						if _, err := io.WriteString(w, c); err != nil {
							return err
						}
						w.(http.Flusher).Flush()
						written++
					}
					return nil
				})
				served := make(chan struct{})
				go func() {
					defer close(served)
					_ = h.ServeHTTP(httptest.NewRecorder(), r, next)
				}()
				<-quiet
				hangUp()
				synctest.Wait() // the proxy has seen the client go, and acted on it
				close(speak)
				<-served

				in, _ := replacerOf(r).Get("ai_gateway_auth.usage.input_tokens")
				estimated := counterValue(usageEstimatesTotal.WithLabelValues("client_gone")) - before
				switch {
				case tc.wantUsage && (upstreamCancelled || written != len(chatChunks)):
					t.Errorf("the upstream read was cancelled (after %d of %d chunks): the usage chunk was lost", written, len(chatChunks))
				case tc.wantUsage && (in != int64(120) || estimated != 0):
					t.Errorf("charged %v input tokens, %v estimated; want the gateway's 120, none estimated", in, estimated)
				case !tc.wantUsage && (!upstreamCancelled || estimated != 1):
					t.Errorf("upstream cancelled %v, %v estimated; want the upstream cancelled at once and an estimate", upstreamCancelled, estimated)
				}
			})
		})
	}
}
