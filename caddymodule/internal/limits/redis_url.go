package limits

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// The Redis URL of limits: checked, turned into client options, and
// kept apart from every text the module shows (logs, errors, status).

// redisTarget is a parsed Redis URL.
type redisTarget struct {
	opts *redis.Options
	// shown is the URL without credentials: scheme://host:port/db.
	shown string
	// secrets are removed from any error text: the password and the URL.
	secrets []string
	// hasPassword: the URL carries a password.
	hasPassword bool
}

// parseRedisURL checks a Redis URL and sets up the client's options. Its
// errors never contain the URL's password.
func parseRedisURL(raw string) (*redisTarget, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Parse's errors quote the URL, or a part of it that may be the
		// password (a password with a '/' reads as a port): say nothing of it
		return nil, errors.New("not a valid URL; want redis://[:password@]host:port/db or rediss:// (percent-encode special characters in the password)")
	}
	t := &redisTarget{}
	if pw, ok := u.User.Password(); ok && pw != "" {
		t.hasPassword = true
		t.secrets = append(t.secrets, pw, url.QueryEscape(pw), url.PathEscape(pw))
	}
	t.secrets = append(t.secrets, raw)
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		scheme := u.Scheme
		if len(scheme) > 16 || strings.ContainsAny(scheme, ":@/") {
			scheme = scheme[:min(len(scheme), 16)] + "…"
		}
		return nil, fmt.Errorf("the URL must start with redis:// or rediss:// (TLS); got scheme %q", scheme)
	}
	if u.Hostname() == "" {
		return nil, errors.New("the URL names no host; want redis://[:password@]host:port/db or rediss://")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, errors.New("the URL takes no query or fragment; want redis://[:password@]host:port/db or rediss://")
	}
	opts, err := redis.ParseURL(raw)
	if err != nil {
		return nil, errors.New(t.scrub(err.Error()))
	}
	host, port, _ := net.SplitHostPort(opts.Addr)
	t.shown = u.Scheme + "://" + net.JoinHostPort(host, port) + "/" + strconv.Itoa(opts.DB)
	if opts.DB < 0 {
		return nil, fmt.Errorf("the database number must be 0 or more (%s)", t.shown)
	}
	// Every wait is bounded by the caller's context (the store's timeout for a
	// request), and nothing retries by itself: a failing Redis is probed
	// once per redisProbeInterval, never dialled per request.
	opts.ContextTimeoutEnabled = true
	opts.MaxRetries = -1
	opts.DialTimeout = redisSlowWait
	opts.DialerRetries = 1
	opts.ReadTimeout = redisSlowWait
	opts.WriteTimeout = redisSlowWait
	opts.PoolTimeout = redisSlowWait // a request's own deadline is shorter
	opts.MinIdleConns = 0            // no connection before the first use
	opts.DisableIdentity = true
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	t.opts = opts
	return t, nil
}

// scrub removes the secrets from an error text, and bounds it.
func (t *redisTarget) scrub(s string) string {
	for _, secret := range t.secrets {
		if secret != "" {
			s = strings.ReplaceAll(s, secret, "[redacted]")
		}
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return s
}
