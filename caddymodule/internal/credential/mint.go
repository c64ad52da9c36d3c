package credential

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/safetext"
)

const (
	// DefaultMintAPI is the Vercel API minting is asked of unless
	// configured otherwise.
	DefaultMintAPI     = "https://api.vercel.com"
	defaultMintTimeout = 10 * time.Second
	mintSourceName     = "ai-gateway-auth"
)

// MintSettings are a mint block with its placeholders resolved.
type MintSettings struct {
	// Project is the project id (prj_…) or name; Team the team id
	// (team_…) or slug, "" for a personal account.
	Project, Team string
	// AccessToken is the Vercel access token that mints.
	AccessToken string
	// API is the Vercel API base URL: https, or http on a loopback host.
	API string
	// Timeout bounds one mint call; 0: 10 s.
	Timeout time.Duration
	// Missing, when set, says why minting is impossible (a required
	// value resolved to nothing): every mint fails with it, and the API
	// is never called.
	Missing string
}

// Minter mints fresh OIDC tokens through the Vercel API:
// POST <api>/v1/projects/<project>/token?source=ai-gateway-auth&teamId=<team>
// with the access token as a bearer. An OIDC token cannot mint another
// one: the access token is a Vercel access token (VERCEL_TOKEN).
type Minter struct {
	endpoint    string // full URL, query included
	project     string
	team        string
	accessToken string
	timeout     time.Duration
	client      *http.Client
	// missing says why minting is impossible (a required value resolved
	// to nothing); minting is then skipped with this reason.
	missing string
}

// NewMinter checks the API's URL (the access token must never cross a
// network in clear) and returns the minter; it makes no call.
func NewMinter(cfg MintSettings) (*Minter, error) {
	m := &Minter{
		project:     cfg.Project,
		team:        cfg.Team,
		accessToken: cfg.AccessToken,
		timeout:     cfg.Timeout,
		missing:     cfg.Missing,
	}
	if m.timeout <= 0 {
		m.timeout = defaultMintTimeout
	}
	base, err := parseAPIURL(cfg.API)
	if err != nil {
		return nil, err
	}
	q := url.Values{"source": {mintSourceName}}
	if m.team != "" {
		q.Set("teamId", m.team)
	}
	m.endpoint = base.JoinPath("v1", "projects", m.project, "token").String() + "?" + q.Encode()
	m.client = &http.Client{
		// The access token must go to the configured API and nowhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return m, nil
}

// CheckMintAPI says what is wrong with a mint API's URL, if anything (see
// NewMinter).
func CheckMintAPI(s string) error {
	_, err := parseAPIURL(s)
	return err
}

// parseAPIURL accepts an https URL, or http on a loopback host (a local
// fake in tests): the access token must never cross a network in clear.
func parseAPIURL(s string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(s, "/"))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("mint api %q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		host := u.Hostname()
		ip := net.ParseIP(host)
		if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("mint api %q: http is only allowed on loopback; use https", s)
		}
	default:
		return nil, fmt.Errorf("mint api %q: scheme must be https", s)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("mint api %q: give the base URL only", s)
	}
	return u, nil
}

// Mint asks the Vercel API for a fresh token. Errors name the endpoint
// and the API's own message, never the access token or the token.
func (m *Minter) Mint(ctx context.Context) (*Credential, error) {
	if m.missing != "" {
		return nil, errors.New(m.missing)
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, m.endpoint, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+m.accessToken)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "ai-gateway-auth")
	where := "POST " + redactQuery(m.endpoint)
	resp, err := m.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, fmt.Errorf("%s: no answer within %s", where, m.timeout)
		}
		return nil, fmt.Errorf("%s: %s", where, safetext.TransportError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	if err != nil {
		return nil, fmt.Errorf("%s: reading response: %v", where, err)
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		return nil, fmt.Errorf("%s: %s%s", where, resp.Status, apiErrorMessage(body))
	}
	var answer struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &answer); err != nil {
		return nil, fmt.Errorf("%s: response is not the expected JSON {\"token\": ...}", where)
	}
	if answer.Token == "" {
		return nil, fmt.Errorf("%s: response has no token", where)
	}
	cred, claims, err := ParseToken(answer.Token, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%s: minted token: %v", where, err)
	}
	if err := oidc.CheckProject(claims, m.team, m.project); err != nil {
		return nil, fmt.Errorf("%s: minted token: %v", where, err)
	}
	return cred, nil
}

// apiErrorMessage extracts the Vercel API's {"error":{"code","message"}},
// kept short.
func apiErrorMessage(body []byte) string {
	var e struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &e) != nil || (e.Error.Code == "" && e.Error.Message == "") {
		return ""
	}
	msg := strings.TrimSpace(e.Error.Code + " " + e.Error.Message)
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	return ": " + msg
}

// redactQuery drops the query for messages: it is noise, not secret.
func redactQuery(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}
