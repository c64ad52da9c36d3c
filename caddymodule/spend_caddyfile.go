package caddymodule

import (
	"regexp"
	"strconv"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/limits"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func (rp *Reporting) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("reporting takes a block (or nothing, for the defaults), not arguments; got '%s'", d.Val())
	}
	return reportingOptions.parseBlock(d, rp)
}

// reportingOptions are the options of the reporting block.
var reportingOptions = newOptions("reporting",
	option[Reporting]{"user", func(d *caddyfile.Dispenser, rp *Reporting) error {
		if rp.User != "" {
			return d.Errf("reporting user is already set; give it once")
		}
		if err := oneArg(d, &rp.User); err != nil {
			return err
		}
		if !strings.Contains(rp.User, "{") {
			if err := checkReportingValue(rp.User, maxReportingUser); err != nil {
				return d.Errf("reporting user '%s': %v; AI Gateway would refuse every request with 400", rp.User, err)
			}
		}
		return nil
	}},
	option[Reporting]{"tags", func(d *caddyfile.Dispenser, rp *Reporting) error {
		args := d.RemainingArgs()
		if len(args) == 0 {
			return d.Errf("tags needs at least one tag, e.g. `tags sandboxes {env.DEPLOY_ENV}`")
		}
		for _, t := range args {
			if !strings.Contains(t, "{") {
				if err := checkReportingValue(t, maxReportingTag); err != nil {
					return d.Errf("reporting tag '%s': %v; AI Gateway would refuse every request with 400", t, err)
				}
			}
		}
		rp.Tags = append(rp.Tags, args...)
		if len(rp.Tags) > maxReportingTags {
			return d.Errf("reporting has %d tags; AI Gateway accepts at most %d per request (tags in request bodies included)", len(rp.Tags), maxReportingTags)
		}
		return nil
	}},
)

// unmarshalCaddyfile parses a `limits { ... }` block: the one parser of
// limits, for the handler's block and for a policy's.
func (l *Limits) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("limits takes a block, not arguments; got '%s'", d.Val())
	}
	if err := limitsOptions.parseBlock(d, l); err != nil {
		return err
	}
	if l.config() == (limits.Config{}) && !l.storeOnly() {
		return d.Errf("limits needs at least one of `requests_per_minute <n>`, `tokens_per_day <n>`, `tokens_per_month <n>`, " +
			"`usd_per_day <amount>`, `usd_per_month <amount>` and `concurrent_requests <n>`")
	}
	return nil
}

// limitsOptions are the options of the limits block.
var limitsOptions = newOptions("limits",
	option[Limits]{"requests_per_minute", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, limits.MaxRequestsPerMinute)
		l.RequestsPerMinute = int(n)
		return err
	}},
	option[Limits]{"tokens_per_day", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, limits.MaxTokens)
		l.TokensPerDay = n
		return err
	}},
	option[Limits]{"tokens_per_month", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, limits.MaxTokens)
		l.TokensPerMonth = n
		return err
	}},
	option[Limits]{"usd_per_day", func(d *caddyfile.Dispenser, l *Limits) error {
		return usdArg(d, &l.USDPerDay)
	}},
	option[Limits]{"usd_per_month", func(d *caddyfile.Dispenser, l *Limits) error {
		return usdArg(d, &l.USDPerMonth)
	}},
	option[Limits]{"concurrent_requests", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, limits.MaxConcurrentRequests)
		l.ConcurrentRequests = int(n)
		return err
	}},
	option[Limits]{"default_max_tokens", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, maxDefaultMaxTokens)
		l.DefaultMaxTokens = n
		return err
	}},
	option[Limits]{"max_clients", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, limits.MaxMaxClients)
		if err == nil && n < limits.MinMaxClients {
			err = d.Errf("max_clients: '%d' is below %d", n, limits.MinMaxClients)
		}
		l.MaxClients = int(n)
		return err
	}},
	option[Limits]{"redis", func(d *caddyfile.Dispenser, l *Limits) error {
		if l.Redis != "" {
			return d.Errf("limits redis is already set; give it once")
		}
		if !d.NextArg() {
			return d.Errf("redis needs the Redis URL, e.g. `redis {env.LIMITS_REDIS_URL}` (redis://[:password@]host:port/db, or rediss:// for TLS)")
		}
		l.Redis = d.Val()
		if d.NextArg() {
			return d.Errf("redis takes one URL; got also '%s'", d.Val())
		}
		if err := redisOptions.parseBlock(d, l); err != nil {
			return err
		}
		if !strings.Contains(l.Redis, "{") {
			// a literal URL: check it now, with the file and line (the
			// error never shows the URL's password)
			r, err := limits.NewRedis(l.Redis, zap.NewNop())
			if err != nil {
				return d.Errf("limits redis: %v", err)
			}
			_ = r.Close()
		}
		return nil
	}},
)

// usdArg reads a dollar limit's amount into usd.
func usdArg(d *caddyfile.Dispenser, usd *float64) error {
	name := d.Val()
	var v string
	if err := oneArg(d, &v); err != nil {
		return err
	}
	f, ok := parseUSD(v)
	if !ok {
		return d.Errf("%s: '%s' is not an amount in USD above 0 and at most 1000000000, written like 5, 0.50 or 1_000", name, v)
	}
	*usd = f
	return nil
}

// redisOptions are the options of the limits block's redis.
var redisOptions = newOptions("redis",
	option[Limits]{"timeout", func(d *caddyfile.Dispenser, l *Limits) error {
		var v string
		if err := oneArg(d, &v); err != nil {
			return err
		}
		t, err := caddy.ParseDuration(v)
		if err != nil || t <= 0 || limits.CheckRedisTimeout(t) != nil {
			return d.Errf("redis timeout: '%s' is not a duration from 1ms to 10s", v)
		}
		l.RedisTimeout = caddy.Duration(t)
		return nil
	}},
)

// usdAmount is how usd_per_day is written: digits (underscores allowed
// between them) and at most one decimal point; no sign, exponent, hex,
// NaN or Inf.
var usdAmount = regexp.MustCompile(`^[0-9](_?[0-9])*(\.[0-9](_?[0-9])*)?$`)

// parseUSD reads a dollar limit's amount: above 0 and at most limits.MaxUSD.
func parseUSD(v string) (float64, bool) {
	if !usdAmount.MatchString(v) {
		return 0, false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(v, "_", ""), 64)
	if err != nil || !(f > 0) || f > limits.MaxUSD {
		return 0, false
	}
	return f, true
}

// positiveArg reads one whole number from 1 to max (underscores allowed
// as digit separators: 2_000_000).
func positiveArg(d *caddyfile.Dispenser, max int64) (int64, error) {
	name := d.Val()
	var v string
	if err := oneArg(d, &v); err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(strings.ReplaceAll(v, "_", ""), 10, 64)
	if err != nil || n < 1 || n > max {
		return 0, d.Errf("%s: '%s' is not a whole number from 1 to %d", name, v, max)
	}
	return n, nil
}
