package caddymodule

import (
	"strconv"
	"strings"
	"testing"
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
		{"empty limits", site("\t\tlimits {\n\t\t}\n"), 6, []string{"limits needs `requests_per_minute <n>`, `tokens_per_day <n>` or both"}},
		{"limits with an argument", site("\t\tlimits 60\n"), 5, []string{"limits takes a block"}},
		{"limit not a number", site("\t\tlimits {\n\t\t\trequests_per_minute lots\n\t\t}\n"), 6,
			[]string{"requests_per_minute: 'lots' is not a whole number from 1 to 1000000"}},
		{"limit zero", site("\t\tlimits {\n\t\t\ttokens_per_day 0\n\t\t}\n"), 6, []string{"tokens_per_day: '0' is not a whole number from 1"}},
		{"unknown limit", site("\t\tlimits {\n\t\t\trequests_per_hour 5\n\t\t}\n"), 6,
			[]string{"unrecognized limits option 'requests_per_hour' (expected requests_per_minute or tokens_per_day)"}},
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
