package caddymodule

import (
	"encoding/json"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/replay"
	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(StatusAPI{})
}

// StatusAPI serves GET /ai_gateway_auth/status on Caddy's admin endpoint:
// for every ai_gateway_auth handler of the running config and each of its
// sources, whether it has a usable credential now, its expiry, the last
// refresh, the last error and the next refresh; never a credential. It
// answers 200 when every handler has a usable credential, else 503, so a
// load balancer or health check can use it.
type StatusAPI struct{}

// CaddyModule returns the Caddy module information.
func (StatusAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.ai_gateway_auth",
		New: func() caddy.Module { return new(StatusAPI) },
	}
}

// Routes implements caddy.AdminRouter.
func (StatusAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/ai_gateway_auth/status", Handler: caddy.AdminHandlerFunc(serveStatus)}}
}

// statusEntry is a provisioned handler, listed in the status until its
// config is unloaded.
type statusEntry struct {
	seq     uint64
	handler *Handler
	// spend as provisioned: Cleanup clears h.spend while the status
	// route may still list the handler
	spend *spend
}

var (
	statusMu      sync.Mutex
	statusSeq     uint64
	statusEntries []*statusEntry
)

func registerStatus(h *Handler) *statusEntry {
	statusMu.Lock()
	defer statusMu.Unlock()
	statusSeq++
	e := &statusEntry{seq: statusSeq, handler: h, spend: h.spend}
	statusEntries = append(statusEntries, e)
	return e
}

func unregisterStatus(e *statusEntry) {
	if e == nil {
		return
	}
	statusMu.Lock()
	defer statusMu.Unlock()
	statusEntries = slices.DeleteFunc(statusEntries, func(x *statusEntry) bool { return x == e })
}

type handlerStatus struct {
	Handler uint64                    `json:"handler"`
	Usable  bool                      `json:"usable"`
	Sources []credential.SourceStatus `json:"sources"`
	Replay  replay.Status             `json:"replay"`
	// How the handler's limits are counted (absent without limits).
	Limits *limits.Status `json:"limits,omitempty"`
	// Client is the one client asked for (?client=<id>), under this
	// handler's limits (absent without metering).
	Client *limits.ClientStatus `json:"client,omitempty"`
	// The gateway's model catalog (absent without metering): its age,
	// model count and last error (catalog.go).
	Catalog *gateway.Status `json:"catalog,omitempty"`
	// The handler's policies, in order, and the policy of the client
	// asked for with ?client=<id> (policies.go).
	Policies     []string `json:"policies,omitempty"`
	ClientPolicy *string  `json:"client_policy,omitempty"`
}

type statusReport struct {
	Healthy  bool            `json:"healthy"`
	Time     time.Time       `json:"time"`
	Handlers []handlerStatus `json:"handlers"`
	// The clients with the most tokens today (UTC), when usage is
	// metered (see limits.go), and where they were read: "redis" (the
	// fleet's counts) or "local" (this instance's).
	TopClientsToday []limits.ClientUsage `json:"top_clients_today,omitempty"`
	TopClientsFrom  string               `json:"top_clients_from,omitempty"`
}

func serveStatus(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Message: "use GET"}
	}
	now := time.Now()
	report := statusReport{Healthy: true, Time: now.UTC(), Handlers: []handlerStatus{}}
	statusMu.Lock()
	entries := slices.Clone(statusEntries)
	statusMu.Unlock()
	report.TopClientsToday, report.TopClientsFrom = topClientsToday(entries, now)
	client := r.URL.Query().Get("client")
	// During a reload the old config's handlers are still listed until it
	// is cleaned up; only the newest handler of each sequence matters to
	// a health check, so report all but judge health on all as well:
	// both must be able to serve during the switch.
	for _, e := range entries {
		hs := handlerStatus{Handler: e.seq, Sources: []credential.SourceStatus{}, Replay: e.handler.replayBudget.Status(), Limits: e.spend.limitsStatus(), Catalog: e.handler.catalogStatus()}
		if client != "" {
			hs.Client = e.spend.clientStatus(client, now)
		}
		hs.Policies, hs.ClientPolicy = e.handler.policyStatus(client)
		for _, s := range e.handler.sources {
			s.Current(now) // starts a source's refresher if no request has yet
			st := s.Status(now)
			hs.Usable = hs.Usable || st.Usable
			hs.Sources = append(hs.Sources, st)
		}
		report.Healthy = report.Healthy && hs.Usable
		report.Handlers = append(report.Handlers, hs)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !report.Healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	return json.NewEncoder(w).Encode(report)
}

// topClientsToday is the status route's top_clients_today: from the
// first metered handler whose Redis answers (then from is "redis"), else
// from this instance's ledger ("local").
func topClientsToday(entries []*statusEntry, now time.Time) (top []limits.ClientUsage, from string) {
	var local *spend
	for _, e := range entries {
		switch {
		case e.spend == nil:
		case e.spend.store.Redis() != nil && e.spend.store.Status().Healthy:
			return e.spend.store.Top(now, 10)
		case local == nil:
			local = e.spend
		}
	}
	if local == nil {
		return nil, ""
	}
	return local.store.Top(now, 10)
}

// clientStatus is one client's counts under the handler's limits: what
// it spent today and this month, what its requests in flight reserve,
// and what is left under each limit. An unknown client has zeros.
func (s *spend) clientStatus(id string, now time.Time) *limits.ClientStatus {
	if s == nil {
		return nil
	}
	st := s.store.ClientStatus(id, s.h.policyForID(id).cfg, now) // under its policy's limits (policies.go)
	return &st
}

// Interface guard
var _ caddy.AdminRouter = StatusAPI{}
