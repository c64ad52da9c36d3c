package caddymodule

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error types, in each SDK's vocabulary.
const (
	errAuthentication = "authentication_error"
	errPermission     = "permission_error"
	errUnavailable    = "api_error"
	errInvalidRequest = "invalid_request_error"
)

// isAnthropicRequest reports whether the client speaks the Anthropic
// Messages API, so that errors come back in the shape its SDK parses.
func isAnthropicRequest(r *http.Request) bool {
	return strings.HasPrefix(r.URL.Path, "/v1/messages") || r.Header.Get("Anthropic-Version") != ""
}

// writeError writes an error in the shape the client's SDK parses:
// Anthropic's {"type":"error","error":{"type","message"}} on the Messages
// API, OpenAI's {"error":{"message","type","code"}} elsewhere. The message
// must never contain a credential.
func writeError(w http.ResponseWriter, r *http.Request, status int, errType, code, message string) error {
	var body any
	if isAnthropicRequest(r) {
		body = map[string]any{
			"type":  "error",
			"error": map[string]string{"type": errType, "message": message},
		}
	} else {
		body = map[string]any{
			"error": map[string]any{"message": message, "type": errType, "code": code, "param": nil},
		}
	}
	buf, err := json.Marshal(body)
	if err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(buf)+1))
	h.Set("Cache-Control", "no-store")
	h.Set("X-Ai-Gateway-Auth-Error", code) // tells a proxy error from a gateway one
	w.WriteHeader(status)
	_, err = w.Write(append(buf, '\n'))
	return err
}

// retryAfterSeconds formats d for a Retry-After header, at least 1s.
func retryAfterSeconds(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	return strconv.Itoa(max(s, 1))
}
