package caddymodule

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/gateway"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// The proxy's own calls to AI Gateway (internal/gateway): the model
// catalog, read in the background, and generation lookups
// (reconcile.go). One link per gateway URL lives in gatewayPool, so a
// config reload keeps the catalog read before (no refetch) and the
// lookups in flight. The catalog is first read on the first metered
// request, never in Provision: `caddy validate` and provisioning make no
// outbound call.

// defaultGateway is where the proxy itself calls when `gateway` is not
// given.
const defaultGateway = "https://ai-gateway.vercel.sh"

// defaultGatewayURL is defaultGateway, but for this package's tests,
// which point it at a closed loopback port: no test calls the real
// gateway.
var defaultGatewayURL = defaultGateway

var gatewayPool = caddy.NewUsagePool()

// reconcilerFirstDelay, when not 0, replaces the reconciler's first wait
// (3 s): for tests, set before the link is made.
var reconcilerFirstDelay time.Duration

// gatewayLink is one gateway URL's catalog source and reconciler, shared
// by every handler (of this config and the next) that names the URL.
type gatewayLink struct {
	url        string
	catalog    *gateway.CatalogSource
	reconciler *gateway.Reconciler
	started    atomic.Bool // the catalog source was started
}

// Destruct implements caddy.Destructor: the last config naming the URL
// is gone.
func (g *gatewayLink) Destruct() error {
	g.catalog.Stop()
	g.reconciler.Stop()
	return nil
}

// checkGatewayURL accepts the gateway's base URL: http(s), a host, and no
// path (but /), query, fragment or userinfo.
func checkGatewayURL(s string) error {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return fmt.Errorf("gateway %q is not a URL: %v", s, err)
	case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
		return fmt.Errorf("gateway %q must be an http or https URL with a host, e.g. %s", s, defaultGateway)
	case u.User != nil:
		return fmt.Errorf("gateway URL must not carry a user or password: the proxy sends its own credential")
	case u.Path != "" && u.Path != "/" || u.RawPath != "" || u.Opaque != "":
		return fmt.Errorf("gateway %q has a path: give the gateway's base URL, without /v1 (e.g. %s)", s, defaultGateway)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Errorf("gateway %q must have no query or fragment", s)
	}
	return nil
}

// gatewayURL is the handler's gateway, placeholders resolved and checked.
func (h *Handler) gatewayURL() (string, error) {
	if h.Gateway == "" {
		return defaultGatewayURL, nil
	}
	u := caddy.NewReplacer().ReplaceAll(h.Gateway, "")
	if err := checkGatewayURL(u); err != nil {
		return "", err
	}
	return strings.TrimSuffix(u, "/"), nil
}

// provisionGateway takes the gateway URL's link from the pool (making it,
// without any call, for the first config that names it) and gives it this
// handler's credential: the latest provisioned handler's wins, so a
// reload's credential config is the one used.
func (h *Handler) provisionGateway() error {
	base, err := h.gatewayURL()
	if err != nil {
		return err
	}
	v, _, err := gatewayPool.LoadOrNew(base, func() (caddy.Destructor, error) {
		return newGatewayLink(base, h.logger)
	})
	if err != nil {
		return fmt.Errorf("gateway: %v", err)
	}
	g := v.(*gatewayLink)
	h.gateway = g
	g.catalog.SetCredential(h.ownCredential)
	g.reconciler.SetCredential(h.ownCredential)
	return nil
}

func newGatewayLink(base string, logger *zap.Logger) (*gatewayLink, error) {
	logger = logger.With(zap.String("gateway", base))
	src, err := gateway.NewCatalogSource(gateway.SourceConfig{BaseURL: base, Logger: logger})
	if err != nil {
		return nil, err
	}
	rec, err := gateway.NewReconciler(gateway.ReconcilerConfig{BaseURL: base, Logger: logger, FirstDelay: reconcilerFirstDelay})
	if err != nil {
		return nil, err
	}
	return &gatewayLink{url: base, catalog: src, reconciler: rec}, nil
}

// releaseGateway gives the link back; the last user stops it. Safe after
// a partial Provision. h.gateway stays set: the status route may still
// list the handler, and a stopped source still reports its last copy.
func (h *Handler) releaseGateway() {
	if h.gateway != nil {
		_, _ = gatewayPool.Delete(h.gateway.url)
	}
}

// ownCredential is the proxy's own credential for its calls to the
// gateway: the one it would set upstream on a request now (the
// credential sources, in priority order).
func (h *Handler) ownCredential(ctx context.Context) (string, error) {
	_, c, err := h.credential(ctx)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(c.AuthHeader()[0], "Bearer "), nil
}

// currentCatalog is the latest catalog read from the handler's gateway,
// nil until one was read. The first call starts the background reader.
func (h *Handler) currentCatalog() *gateway.Catalog {
	g := h.gateway
	if g == nil {
		return nil
	}
	if !g.started.Load() && g.started.CompareAndSwap(false, true) {
		g.catalog.Start()
	}
	return g.catalog.Current()
}

// awaitCatalog is currentCatalog for a request that cannot be admitted
// without one (a dollar limit): when none was read yet, it waits for the
// first read to end, at most credential_wait or until ctx ends, so that
// the first requests after a start are not refused while the catalog is
// on its way. A first read that failed ends the wait at once.
func (h *Handler) awaitCatalog(ctx context.Context) *gateway.Catalog {
	c := h.currentCatalog()
	if c != nil || h.gateway == nil {
		return c
	}
	wait := time.Duration(h.CredentialWait)
	if wait <= 0 {
		wait = defaultCredentialWait
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-h.gateway.catalog.Tried():
	case <-t.C:
	case <-ctx.Done():
	}
	return h.gateway.catalog.Current()
}

// catalogStatus is what the status route shows of the handler's catalog
// (nil without metering): its age, model count and last error, never a
// credential.
func (h *Handler) catalogStatus() *gateway.Status {
	if h.gateway == nil {
		return nil
	}
	st := h.gateway.catalog.Status()
	return &st
}
