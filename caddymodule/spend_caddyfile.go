package caddymodule

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
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

func (l *Limits) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.Errf("limits takes a block, not arguments; got '%s'", d.Val())
	}
	if err := limitsOptions.parseBlock(d, l); err != nil {
		return err
	}
	if l.RequestsPerMinute == 0 && l.TokensPerDay == 0 {
		return d.Errf("limits needs `requests_per_minute <n>`, `tokens_per_day <n>` or both")
	}
	return nil
}

// limitsOptions are the options of the limits block.
var limitsOptions = newOptions("limits",
	option[Limits]{"requests_per_minute", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, 1_000_000)
		l.RequestsPerMinute = int(n)
		return err
	}},
	option[Limits]{"tokens_per_day", func(d *caddyfile.Dispenser, l *Limits) error {
		n, err := positiveArg(d, 1<<53)
		l.TokensPerDay = n
		return err
	}},
)

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
