package caddymodule

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/ai-gateway-auth/ai_gateway_auth/caddymodule/internal/credential"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// resolveShare turns share on in cfg: it keeps the config's storage (no
// I/O here), this instance's id and the project the settings name.
func resolveShare(ctx caddy.Context, cfg *credential.OIDCConfig) error {
	storage := configStorage(ctx)
	if storage == nil {
		return errors.New("share: caddy has no storage configured")
	}
	var instance string
	if id, err := caddy.InstanceID(); err == nil {
		instance = id.String()
	} else {
		sum := sha256.Sum256([]byte(fmt.Sprint(time.Now().UnixNano())))
		instance = "unknown-" + hex.EncodeToString(sum[:])[:8]
	}
	cfg.EnableShare(storage, instance)
	return nil
}

// configStorage is ctx's storage, or nil for a context made without a
// config (unit tests), whose Storage method panics.
func configStorage(ctx caddy.Context) (s certmagic.Storage) {
	defer func() {
		if recover() != nil {
			s = nil
		}
	}()
	return ctx.Storage()
}
