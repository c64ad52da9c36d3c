package caddymodule

import (
	"fmt"
	"testing"
)

// The cost of policies on the hot path, against BenchmarkServeHTTPSpendOnJSON
// (the same request, metering and reporting on):
//
//	go test ./caddymodule -run '^$' -bench 'ServeHTTPSpendOnJSON|Policies' -benchmem -count 5
//
// AllowModels: the block's allowlist, the model checked at the body's end.
// Policies: ten policies, the client's the last, each with an allowlist.
func BenchmarkServeHTTPPoliciesAllowModels(b *testing.B) {
	benchSpendWith(b, spendOn, false, func(h *Handler) { h.AllowModels = []string{"anthropic/*", "openai/gpt-5*"} })
}

func BenchmarkServeHTTPPoliciesTen(b *testing.B) {
	benchSpendWith(b, spendOn, false, func(h *Handler) {
		h.ClientKeySecrets = []string{"bench-secret-0123456789abcdef"} // key:<name> clients, for the nine
		for i := range 9 {
			h.Policies = append(h.Policies, Policy{Name: fmt.Sprintf("p%d", i), Clients: []string{fmt.Sprintf("key:team-%d-*", i)}, AllowModels: []string{"anthropic/*"}})
		}
		// the client is placeholder: the last policy matches it
		h.Policies = append(h.Policies, Policy{Name: "last", Clients: []string{"placeholder"}, AllowModels: []string{"openai/*"}})
	})
}
