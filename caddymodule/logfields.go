package caddymodule

import (
	"net/http"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"go.uber.org/zap"
)

// Log fields for request events: who, from where, what; never a key or
// a token.

func pushFields(r *http.Request, c *credential.Credential, used bool) []zap.Field {
	return []zap.Field{
		zap.String("remote_ip", remoteIP(r)),
		zap.Time("expires", c.Expires()),
		zap.String("project_id", c.ProjectID()),
		zap.Bool("used", used),
	}
}

func pushRefusedFields(r *http.Request, status int, reason string) []zap.Field {
	return []zap.Field{
		zap.String("remote_ip", remoteIP(r)),
		zap.Int("status", status),
		zap.String("reason", reason),
	}
}
