package credential

import "testing"

func TestTokenFromFileContent(t *testing.T) {
	const v = "VERCEL_OIDC_TOKEN"
	const jwt = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjF9.c2ln"
	for _, tc := range []struct {
		name, content string
		want          string
		found         bool
	}{
		{"raw JWT", jwt, jwt, true},
		{"raw JWT with newline", jwt + "\n", jwt, true},
		{"raw JWT with spaces and CRLF", "  " + jwt + " \r\n", jwt, true},
		{"dotenv plain", "VERCEL_OIDC_TOKEN=" + jwt + "\n", jwt, true},
		{"dotenv double quotes", `VERCEL_OIDC_TOKEN="` + jwt + `"`, jwt, true},
		{"dotenv single quotes", `VERCEL_OIDC_TOKEN='` + jwt + `'`, jwt, true},
		{"dotenv export", "export VERCEL_OIDC_TOKEN=" + jwt, jwt, true},
		{"dotenv export quoted", `export VERCEL_OIDC_TOKEN="` + jwt + `"`, jwt, true},
		{"dotenv spaces around =", "VERCEL_OIDC_TOKEN = " + jwt, jwt, true},
		{"dotenv trailing comment", "VERCEL_OIDC_TOKEN=" + jwt + " # pulled by vercel env pull", jwt, true},
		{"dotenv quoted with comment after", `VERCEL_OIDC_TOKEN="` + jwt + `" # note`, jwt, true},
		{"dotenv CRLF", "A=1\r\nVERCEL_OIDC_TOKEN=\"" + jwt + "\"\r\nB=2\r\n", jwt, true},
		{
			"vercel env pull .env.local",
			"# Created by Vercel CLI\nNX_DAEMON=\"false\"\nTURBO_REMOTE_ONLY=\"true\"\n" +
				"VERCEL=\"1\"\nVERCEL_ENV=\"development\"\nVERCEL_OIDC_TOKEN=\"" + jwt + "\"\nVERCEL_URL=\"\"\n",
			jwt, true,
		},
		{"commented out", "# VERCEL_OIDC_TOKEN=" + jwt + "\n", "", false},
		{"other variables only", "AI_GATEWAY_API_KEY=x\nVERCEL_OIDC_TOKEN_OLD=" + jwt, "", false},
		{"prefix variable", "MY_VERCEL_OIDC_TOKEN=" + jwt, "", false},
		{"last assignment wins", "VERCEL_OIDC_TOKEN=old.old.old\nVERCEL_OIDC_TOKEN=" + jwt, jwt, true},
		{"empty value", "VERCEL_OIDC_TOKEN=\n", "", true},
		{"empty quoted value", `VERCEL_OIDC_TOKEN=""`, "", true},
		{"empty file", "", "", false},
		{"not a JWT nor dotenv", "hello world", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, found := tokenFromFileContent(tc.content, v)
			if got != tc.want || found != tc.found {
				t.Errorf("got (%q, %v), want (%q, %v)", got, found, tc.want, tc.found)
			}
		})
	}
}

func TestDotenvOtherVariable(t *testing.T) {
	content := "VERCEL_OIDC_TOKEN=a.b.c\nMY_TOKEN='x.y.z'\n"
	if got, ok := dotenvValue(content, "MY_TOKEN"); !ok || got != "x.y.z" {
		t.Errorf("dotenvValue(MY_TOKEN) = %q, %v", got, ok)
	}
}
