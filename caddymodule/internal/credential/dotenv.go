package credential

import (
	"bufio"
	"strings"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/oidc"
)

// tokenFromFileContent returns the token in a token file: either the file
// is a raw JWT, or it is a dotenv file (as `vercel env pull` writes
// .env.local) and the token is the value of variable.
func tokenFromFileContent(content, variable string) (string, bool) {
	if t := strings.TrimSpace(content); oidc.LooksLikeJWT(t) {
		return t, true
	}
	v, ok := dotenvValue(content, variable)
	return strings.TrimSpace(v), ok // a token never has surrounding space, even quoted
}

// dotenvValue finds variable in dotenv content: KEY=VALUE lines, an
// optional "export " prefix, values optionally in single or double
// quotes, # comments. The last assignment wins, as in a shell.
func dotenvValue(content, variable string) (string, bool) {
	var value string
	var found bool
	sc := bufio.NewScanner(strings.NewReader(content))
	sc.Buffer(make([]byte, 0, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		key, val, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(key) != variable {
			continue
		}
		value, found = unquoteDotenv(strings.TrimSpace(val)), true
	}
	return value, found
}

func unquoteDotenv(v string) string {
	if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') {
		if end := strings.IndexByte(v[1:], v[0]); end >= 0 {
			return v[1 : 1+end]
		}
	}
	// unquoted: a " #" starts a comment
	if i := strings.Index(v, " #"); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}
