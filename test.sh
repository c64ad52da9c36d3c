#!/usr/bin/env bash
# The whole test suite, as the README gives it and CI runs it:
#
#   ./test.sh [go test flags...]     e.g. ./test.sh -run TestDocs ./caddymodule
#
# First it installs what some tests need and a fresh machine lacks, when it
# can (each such test skips, saying why, when its tool is missing):
#   - redis-server (Debian), for the fleet-wide limits tests against a real
#     Redis;
#   - the npm packages of examples/grafana/check (TypeScript and Grafana's
#     published schema), for the dashboard's validation.
# Installs need the network (Debian's mirrors, the npm registry); the tests
# themselves use loopback only.
set -euo pipefail
cd "$(dirname "$0")"

as_root() {
	if [ "$(id -u)" = 0 ]; then
		"$@"
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		sudo -n "$@"
	else
		return 1
	fi
}

if ! command -v redis-server >/dev/null; then
	echo "--- installing redis-server (Debian)"
	if ! { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }; then
		echo "--- could not install redis-server: the tests that need a real Redis will skip" >&2
	fi
	# the package starts a system-wide server on 6379; the tests start their own
	as_root systemctl disable --now redis-server >/dev/null 2>&1 || true
fi

check=examples/grafana/check
if [ -f "$check/package-lock.json" ] && [ ! -d "$check/node_modules" ]; then
	if command -v npm >/dev/null; then
		echo "--- npm ci in $check"
		npm ci --prefix "$check" --no-audit --no-fund --loglevel=error ||
			echo "--- npm ci failed: the dashboard's schema check will skip" >&2
	else
		echo "--- npm not found: the dashboard's schema check will skip" >&2
	fi
fi

packages=no
for arg in "$@"; do
	case $arg in ./*) packages=yes ;; esac
done
if [ $packages = no ]; then
	set -- "$@" ./...
fi
exec go test -race -timeout 30m "$@"
