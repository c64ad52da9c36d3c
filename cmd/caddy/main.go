// Command caddy is Caddy with its standard modules and the ai_gateway_auth
// module, so that `go build ./cmd/caddy` gives a working proxy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/ai-gateway-auth/ai_gateway_auth/caddymodule"
)

func main() {
	caddycmd.Main()
}
