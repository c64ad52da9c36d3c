package caddymodule

// Version is this module's release, as Go module versions are written.
// `caddy list-modules --versions` prints it for a Caddy built with the
// xcaddy command of xcaddy.json, which names this version; a Caddy built
// with `go build ./cmd/caddy` from this repository lists the module
// without one (see docs/building.md). cmd/caddy's tests hold this
// constant, xcaddy.json and CHANGELOG.md's newest release heading to one
// another.
const Version = "v0.1.0"
