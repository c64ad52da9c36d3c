package caddymodule

import (
	"context"
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(StaticSource{})
}

// StaticSource is a fixed AI Gateway API key. An empty value (typically
// an unset environment variable) makes the source skip, so the next source
// in the list is used.
type StaticSource struct {
	// The API key. Write it as a placeholder such as {env.AI_GATEWAY_API_KEY}
	// or {file./path}: it is resolved at provision, so the config (and the
	// admin API's view of it) never holds the key itself.
	Key string `json:"key,omitempty"`

	cred *credential.Credential
}

// CaddyModule returns the Caddy module information.
func (StaticSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.ai_gateway_auth.credentials.static",
		New: func() caddy.Module { return new(StaticSource) },
	}
}

// Provision resolves the key's placeholders.
func (s *StaticSource) Provision(ctx caddy.Context) error {
	if s.Key != "" && !strings.Contains(s.Key, "{") {
		ctx.Logger().Warn("credential static holds a literal key: it is visible in the config and the admin API; use {env.AI_GATEWAY_API_KEY} or {file.<path>} instead")
	}
	key := strings.TrimSpace(caddy.NewReplacer().ReplaceAll(s.Key, ""))
	if key != "" {
		s.cred = credential.New(key, credential.MethodAPIKey, time.Time{}, time.Now())
	} else {
		ctx.Logger().Info("credential static is empty; it will be skipped", zap.String("config", s.Key))
	}
	return nil
}

// Current implements Source.
func (s *StaticSource) Current(time.Time) *credential.Credential { return s.cred }

// Fetch implements Source.
func (s *StaticSource) Fetch(context.Context) (*credential.Credential, error) {
	if s.cred == nil {
		return nil, s.emptyError()
	}
	return s.cred, nil
}

func (s *StaticSource) emptyError() error {
	if s.Key == "" {
		return safetext.Refuse("no key", "no key configured")
	}
	// s.Key is the placeholder as configured, e.g. {env.AI_GATEWAY_API_KEY}
	return safetext.Refuse("no key", "key is empty ("+s.Key+" resolved to nothing)")
}

// Kind implements Source.
func (*StaticSource) Kind() string { return "static" }

// Status implements Source.
func (s *StaticSource) Status(time.Time) credential.SourceStatus {
	st := credential.SourceStatus{Kind: s.Kind(), Usable: s.cred != nil, Method: credential.MethodAPIKey}
	if s.cred == nil {
		st.LastError = s.emptyError().Error()
	}
	return st
}

var (
	_ credential.Source = (*StaticSource)(nil)
	_ caddy.Provisioner = (*StaticSource)(nil)
)
