package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"unicode/utf8"
)

// credentialFunc returns the proxy's own credential for AI Gateway.
type credentialFunc = func(context.Context) (string, error)

// caller is where and with what the proxy calls the gateway: shared by
// the catalog source and the reconciler.
type caller struct {
	base   *url.URL
	client *http.Client
	cred   atomic.Pointer[credentialFunc]
}

func newCaller(baseURL string, client *http.Client, cred credentialFunc) (*caller, error) {
	base, err := parseBaseURL(baseURL)
	if err != nil {
		return nil, err
	}
	if client == nil {
		client = defaultClient
	}
	c := &caller{base: base, client: client}
	c.SetCredential(cred)
	return c, nil
}

// defaultClient follows no redirect: the gateway sends none, and a
// redirect should not carry the credential anywhere else.
var defaultClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// parseBaseURL accepts an absolute http(s) URL without credentials, query
// or fragment (a path is kept as a prefix).
func parseBaseURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("gateway URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("gateway URL %q: scheme must be http or https", s)
	case u.Host == "":
		return nil, fmt.Errorf("gateway URL %q: no host", s)
	case u.User != nil:
		return nil, errors.New("gateway URL: must not carry credentials")
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "":
		return nil, fmt.Errorf("gateway URL %q: must have no query or fragment", s)
	}
	return u, nil
}

// SetCredential sets the function that gives the proxy's own credential
// (an AI Gateway API key or a Vercel OIDC token) for the next call. The
// latest set wins; nil makes calls fail until one is set.
func (c *caller) SetCredential(f func(context.Context) (string, error)) {
	if f == nil {
		c.cred.Store(nil)
		return
	}
	c.cred.Store(&f)
}

func (c *caller) credential(ctx context.Context) (string, error) {
	f := c.cred.Load()
	if f == nil {
		return "", errors.New("no credential set for the gateway")
	}
	v, err := (*f)(ctx)
	if err != nil {
		return "", fmt.Errorf("getting the credential for the gateway: %w", err)
	}
	if v == "" {
		return "", errors.New("getting the credential for the gateway: empty")
	}
	return v, nil
}

// get sends GET u with the credential. A non-2xx answer is returned as a
// *statusError (its body read and closed); otherwise the caller closes
// the body.
func get(ctx context.Context, client *http.Client, u, credential string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+credential)
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, scrub(err, credential)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, newStatusError(resp, u, credential)
	}
	return resp, nil
}

// statusError is a non-2xx answer from the gateway.
type statusError struct {
	code int
	msg  string // from the body, bounded and without the credential
	url  string
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("GET %s: gateway answered %d", e.url, e.code)
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s
}

const maxErrorMessage = 200

func newStatusError(resp *http.Response, u, credential string) *statusError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	var body struct {
		Error struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		} `json:"error"`
	}
	msg := ""
	if json.Unmarshal(b, &body) == nil {
		msg = strings.TrimSpace(body.Error.Type + " " + body.Error.Message)
	}
	if credential != "" { // before truncating, which could cut it in two
		msg = strings.ReplaceAll(msg, credential, "[credential]")
	}
	if len(msg) > maxErrorMessage {
		msg = msg[:maxErrorMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
		msg += "…"
	}
	return &statusError{code: resp.StatusCode, msg: msg, url: u}
}

// scrub keeps the credential out of an error's text, whatever produced
// it; the error chain is kept.
func scrub(err error, credential string) error {
	if err == nil || credential == "" || !strings.Contains(err.Error(), credential) {
		return err
	}
	return &scrubbed{err: err, text: strings.ReplaceAll(err.Error(), credential, "[credential]")}
}

type scrubbed struct {
	err  error
	text string
}

func (s *scrubbed) Error() string { return s.text }
func (s *scrubbed) Unwrap() error { return s.err }
