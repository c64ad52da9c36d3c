package caddymodule

import (
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/caddyserver/caddy/v2"
)

// MintConfig mints fresh OIDC tokens through the Vercel API:
// POST <api>/v1/projects/<project>/token?source=ai-gateway-auth&teamId=<team>
// with the access token as a bearer. An OIDC token cannot mint another
// one: the access token is a Vercel access token (VERCEL_TOKEN).
type MintConfig struct {
	// The project id (prj_…) or name. Placeholders allowed. Required.
	Project string `json:"project,omitempty"`
	// The team id (team_…) or slug; empty for a personal account.
	// Placeholders allowed.
	Team string `json:"team,omitempty"`
	// The Vercel access token. Write it as a placeholder such as
	// {env.VERCEL_TOKEN}: it is resolved at provision, so the config never
	// holds it. Required.
	AccessToken string `json:"access_token,omitempty"`
	// The Vercel API base URL. Must be https unless it is a loopback
	// address (for tests). Default: https://api.vercel.com.
	API string `json:"api,omitempty"`
	// How long one mint call may take. Default: 10s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// settings are the mint block with its placeholders resolved; a required
// value that resolved to nothing makes every mint fail, naming it.
func (m *MintConfig) settings() credential.MintSettings {
	repl := caddy.NewReplacer()
	api := m.API
	if api == "" {
		api = credential.DefaultMintAPI
	}
	s := credential.MintSettings{
		Project:     strings.TrimSpace(repl.ReplaceAll(m.Project, "")),
		Team:        strings.TrimSpace(repl.ReplaceAll(m.Team, "")),
		AccessToken: strings.TrimSpace(repl.ReplaceAll(m.AccessToken, "")),
		API:         repl.ReplaceAll(api, ""),
		Timeout:     time.Duration(m.Timeout),
	}
	switch {
	case s.Project == "":
		s.Missing = "project is empty (" + m.Project + " resolved to nothing)"
	case s.AccessToken == "":
		s.Missing = "access_token is empty (" + m.AccessToken + " resolved to nothing)"
	}
	return s
}
