package caddymodule

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Mistakes in reporting, limits and usage_metrics name the file and line
// of the offending option and say what to write instead.
func TestSpendCaddyfileErrors(t *testing.T) {
	const file = "Caddyfile.test"
	site := func(lines ...string) string { // the option is on line 5
		return ":4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.AI_GATEWAY_API_KEY}\n\t\tclient_key sk-placeholder\n" +
			strings.Join(lines, "") + "\t}\n\treverse_proxy https://ai-gateway.vercel.sh\n}\n"
	}
	for _, tc := range []struct {
		name  string
		body  string
		line  int
		wants []string
	}{
		{"usage_metrics with an argument", site("\t\tusage_metrics on\n"), 5, []string{"usage_metrics takes no arguments; got 'on'"}},
		{"reporting with an argument", site("\t\treporting user\n"), 5, []string{"reporting takes a block"}},
		{"reporting twice", site("\t\treporting\n\t\treporting\n"), 6, []string{"reporting is already configured; give it once"}},
		{"unknown reporting option", site("\t\treporting {\n\t\t\tusers x\n\t\t}\n"), 6, []string{"unrecognized reporting option 'users' (expected user or tags)"}},
		{"user too long", site("\t\treporting {\n\t\t\tuser " + strings.Repeat("u", 257) + "\n\t\t}\n"), 6,
			[]string{"longer than 256 characters", "AI Gateway would refuse every request with 400"}},
		{"tag with a comma", site("\t\treporting {\n\t\t\ttags a,b\n\t\t}\n"), 6, []string{"reporting tag 'a,b': a tag cannot contain a comma"}},
		{"tag too long", site("\t\treporting {\n\t\t\ttags " + strings.Repeat("t", 65) + "\n\t\t}\n"), 6, []string{"longer than 64 characters"}},
		{"eleven tags", site("\t\treporting {\n\t\t\ttags a b c d e f\n\t\t\ttags g h i j k\n\t\t}\n"), 7, []string{"reporting has 11 tags; AI Gateway accepts at most 10"}},
		{"tags without values", site("\t\treporting {\n\t\t\ttags\n\t\t}\n"), 6, []string{"tags needs at least one tag"}},
		{"empty limits", site("\t\tlimits {\n\t\t}\n"), 6, []string{"limits needs at least one of `requests_per_minute <n>`, `tokens_per_day <n>`, `tokens_per_month <n>`, `usd_per_day <amount>`, `usd_per_month <amount>` and `concurrent_requests <n>`"}},
		{"limits with an argument", site("\t\tlimits 60\n"), 5, []string{"limits takes a block"}},
		{"limit not a number", site("\t\tlimits {\n\t\t\trequests_per_minute lots\n\t\t}\n"), 6,
			[]string{"requests_per_minute: 'lots' is not a whole number from 1 to 1000000"}},
		{"limit zero", site("\t\tlimits {\n\t\t\ttokens_per_day 0\n\t\t}\n"), 6, []string{"tokens_per_day: '0' is not a whole number from 1"}},
		{"unknown limit", site("\t\tlimits {\n\t\t\trequests_per_hour 5\n\t\t}\n"), 6,
			[]string{"unrecognized limits option 'requests_per_hour' (expected requests_per_minute, tokens_per_day, tokens_per_month, usd_per_day, usd_per_month, concurrent_requests, default_max_tokens, max_clients or redis)"}},
		{"concurrent_requests zero", site("\t\tlimits {\n\t\t\tconcurrent_requests 0\n\t\t}\n"), 6,
			[]string{"concurrent_requests: '0' is not a whole number from 1 to 1000000"}},
		{"usd_per_month negative", site("\t\tlimits {\n\t\t\tusd_per_month -5\n\t\t}\n"), 6,
			[]string{"usd_per_month: '-5' is not an amount in USD above 0"}},
		{"tokens_per_month too large", site("\t\tlimits {\n\t\t\ttokens_per_month 9007199254740993\n\t\t}\n"), 6,
			[]string{"tokens_per_month: '9007199254740993' is not a whole number from 1 to 9007199254740992"}},
		{"default_max_tokens alone", site("\t\tlimits {\n\t\t\tdefault_max_tokens 4096\n\t\t}\n"), 5, []string{"limits sets no limit, only where to count", "add one of requests_per_minute"}},
		{"default_max_tokens too large", site("\t\tlimits {\n\t\t\ttokens_per_day 5\n\t\t\tdefault_max_tokens 20000000\n\t\t}\n"), 7,
			[]string{"default_max_tokens: '20000000' is not a whole number from 1 to 10000000"}},
		{"redis alone", site("\t\tlimits {\n\t\t\tredis {env.LIMITS_REDIS_URL}\n\t\t}\n"), 5, []string{"limits sets no limit, only where to count", "or a policy with limits"}},
		{"redis without a URL", site("\t\tlimits {\n\t\t\tusd_per_day 5\n\t\t\tredis\n\t\t}\n"), 7, []string{"redis needs the Redis URL"}},
		{"redis twice", site("\t\tlimits {\n\t\t\tusd_per_day 5\n\t\t\tredis {env.A}\n\t\t\tredis {env.B}\n\t\t}\n"), 8, []string{"limits redis is already set"}},
		{"redis with two URLs", site("\t\tlimits {\n\t\t\tusd_per_day 5\n\t\t\tredis {env.A} {env.B}\n\t\t}\n"), 7, []string{"redis takes one URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := adapt(t, file, tc.body)
			if err == nil {
				t.Fatal("adapted without error")
			}
			msg := err.Error()
			if at := file + ":" + strconv.Itoa(tc.line); !strings.Contains(msg, at) {
				t.Errorf("error does not point at %s: %s", at, msg)
			}
			for _, want := range tc.wants {
				if !strings.Contains(msg, want) {
					t.Errorf("error lacks %q: %s", want, msg)
				}
			}
		})
	}
}

// usd_per_day takes a positive decimal amount; anything else (sign,
// zero, exponent, hex, NaN, Inf, a unit) is refused with file and line.
func TestUSDPerDayCaddyfile(t *testing.T) {
	const file = "Caddyfile.test"
	site := func(amount string) string { // the amount is on line 6
		return ":4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.AI_GATEWAY_API_KEY}\n\t\tclient_key sk-placeholder\n" +
			"\t\tlimits {\n\t\t\tusd_per_day " + amount + "\n\t\t}\n\t}\n\treverse_proxy https://ai-gateway.vercel.sh\n}\n"
	}
	for amount, want := range map[string]float64{"5": 5, "0.50": 0.5, "1_000": 1000, "1_000.25": 1000.25, "0.001": 0.001, "1000000000": 1e9} {
		cfg, _, err := adapt(t, file, site(amount))
		if err != nil {
			t.Errorf("usd_per_day %s: %v", amount, err)
			continue
		}
		var doc struct {
			Apps struct {
				HTTP struct {
					Servers map[string]struct {
						Routes []struct {
							Handle []struct {
								Limits *Limits `json:"limits"`
							} `json:"handle"`
						} `json:"routes"`
					} `json:"servers"`
				} `json:"http"`
			} `json:"apps"`
		}
		if err := json.Unmarshal(cfg, &doc); err != nil {
			t.Fatal(err)
		}
		if got := doc.Apps.HTTP.Servers["srv0"].Routes[0].Handle[0].Limits; got == nil || got.USDPerDay != want {
			t.Errorf("usd_per_day %s: adapted to %s, want %v", amount, cfg, want)
		}
	}
	for _, bad := range []string{"0", "0.0", "-5", "+5", "5.", ".5", "1e3", "0x10", "0x1p3", "NaN", "nan", "Inf", "+Inf", "infinity", "5$", "$5", "5USD", "1_", "_1", "1__0", "1,5", "1000000000.01", "99999999999", "''"} {
		_, _, err := adapt(t, file, site(bad))
		if err == nil {
			t.Errorf("usd_per_day %s: adapted without error", bad)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, file+":6") || !strings.Contains(msg, "usd_per_day:") {
			t.Errorf("usd_per_day %s: error does not name the option at %s:6: %s", bad, file, msg)
		}
	}
}

// A literal Redis URL is checked when the Caddyfile is adapted, with file
// and line, and the error never shows its password; a placeholder is
// kept as it is, for Provision to resolve.
func TestLimitsRedisCaddyfile(t *testing.T) {
	const file = "Caddyfile.test"
	const password = "s3cret-redis-pw-7f2a"
	site := func(url string) string { // the URL is on line 7
		return ":4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.AI_GATEWAY_API_KEY}\n\t\tclient_key sk-placeholder\n" +
			"\t\tlimits {\n\t\t\trequests_per_minute 60\n\t\t\tredis " + url + "\n\t\t}\n\t}\n\treverse_proxy https://ai-gateway.vercel.sh\n}\n"
	}
	cfg, _, err := adapt(t, file, site("{env.LIMITS_REDIS_URL}"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), `"redis":"{env.LIMITS_REDIS_URL}"`) {
		t.Errorf("the placeholder is not kept in the JSON config: %s", cfg)
	}
	for _, good := range []string{"redis://127.0.0.1:6379/0", "rediss://:" + password + "@redis.internal:6380/2", "redis://limits:" + password + "@10.0.0.5", "redis://[::1]:6379"} {
		if _, _, err := adapt(t, file, site(good)); err != nil {
			t.Errorf("%s: %v", good, err)
		}
	}
	for _, bad := range []string{
		"http://:" + password + "@127.0.0.1:6379/0",
		"127.0.0.1:6379",
		"unix:///run/redis.sock",
		"redis://:" + password + "@/0",
		"redis://:" + password + "@127.0.0.1:6379/zero",
		"redis://:" + password + "@127.0.0.1:6379/0/1",
		"redis://:" + password + "@127.0.0.1:port/0",
		"redis://:" + password + "@127.0.0.1:6379/0?db=1",
		"redis://:" + password + "%zz@127.0.0.1:6379/0",
		"redis://:" + password + "@127.0.0.1:6379/-1",
	} {
		_, _, err := adapt(t, file, site(bad))
		if err == nil {
			t.Errorf("%s: adapted without error", bad)
			continue
		}
		msg := err.Error()
		if !strings.Contains(msg, file+":7") || !strings.Contains(msg, "limits redis:") {
			t.Errorf("%s: error does not point at %s:7: %s", bad, file, msg)
		}
		if strings.Contains(msg, password) {
			t.Errorf("the error shows the password: %s", msg)
		}
	}
}

// redis takes an optional block with timeout, the longest a request
// waits for Redis.
func TestLimitsRedisTimeoutCaddyfile(t *testing.T) {
	const file = "Caddyfile.test"
	site := func(block string) string { // the timeout is on line 8
		return ":4000 {\n\tai_gateway_auth {\n\t\tcredential static {env.AI_GATEWAY_API_KEY}\n\t\tclient_key sk-placeholder\n" +
			"\t\tlimits {\n\t\t\trequests_per_minute 60\n\t\t\tredis {env.LIMITS_REDIS_URL} {\n" + block + "\t\t\t}\n\t\t}\n\t}\n\treverse_proxy https://ai-gateway.vercel.sh\n}\n"
	}
	cfg, _, err := adapt(t, file, site("\t\t\t\ttimeout 200ms\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(cfg), `"redis_timeout":200000000`) {
		t.Errorf("adapted: %s", cfg)
	}
	for block, want := range map[string]string{
		"\t\t\t\ttimeout 0\n":     "redis timeout: '0' is not a duration from 1ms to 10s",
		"\t\t\t\ttimeout 11s\n":   "redis timeout: '11s' is not a duration from 1ms to 10s",
		"\t\t\t\ttimeout soon\n":  "redis timeout: 'soon' is not a duration",
		"\t\t\t\tpassword x\n":    "unrecognized redis option 'password' (expected timeout)",
		"\t\t\t\ttimeout 1s 2s\n": "timeout takes one value",
	} {
		_, _, err := adapt(t, file, site(block))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), file+":8") {
			t.Errorf("%q: %v, want %q at %s:8", block, err, want, file)
		}
	}
	for _, lim := range []Limits{
		{RequestsPerMinute: 1, RedisTimeout: caddy.Duration(time.Second)}, // without redis
		{RequestsPerMinute: 1, Redis: "{env.X}", RedisTimeout: caddy.Duration(time.Microsecond)},
		{RequestsPerMinute: 1, Redis: "{env.X}", RedisTimeout: caddy.Duration(-time.Second)},
	} {
		if err := lim.check(); err == nil {
			t.Errorf("%+v accepted", lim)
		}
	}
}
