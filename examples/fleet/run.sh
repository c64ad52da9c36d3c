#!/usr/bin/env bash
# A fleet on this machine, on loopback only: one redis-server, a fake AI
# Gateway (bench/upstream), a fake Vercel token API (fleet/fakevercel)
# and three Caddy instances running fleet/local.Caddyfile, sharing one
# storage folder (the OIDC token: `share`) and one Redis (the limits:
# `redis`). It shows
#   1. one limit across the three: a client allowed 6 requests a minute
#      sends 9, spread over the instances: 6 are answered, 3 get 429;
#   2. one mint per rotation: with 20 s tokens refreshed 5 s before
#      expiry, the three instances together mint about once per rotation
#      (each alone would mint at every rotation);
#   3. Redis stopped: the instances serve on, each counting alone, and
#      the status route says so; Redis back: counts are fleet-wide again.
# Then it stops everything it started. Needs Go and redis-server
# (apt-get install redis-server). Run from anywhere:
#
#	examples/fleet/run.sh              # about a minute
#	ROTATIONS=5 examples/fleet/run.sh  # watch more rotations
#
# Ports (loopback): Redis 16379, upstream 18080, Vercel 18081, proxies
# 4101-4103, their admin endpoints 2101-2103; change them with the
# variables below if they are taken (the script checks first and says
# which one is; bench/run.sh uses 18080-18094).
set -euo pipefail

REDIS_PORT=${REDIS_PORT:-16379}
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}
VERCEL_PORT=${VERCEL_PORT:-18081}
PROXY_PORTS=(${PROXY_PORTS:-4101 4102 4103})
ADMIN_PORTS=(${ADMIN_PORTS:-2101 2102 2103})
ROTATIONS=${ROTATIONS:-3}
TOKEN_TTL=20 # seconds; local.Caddyfile refreshes 5 s before expiry

cd "$(dirname "$0")/../.."
command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is not installed" >&2; exit 1; }

# Every port must be free: a port another process holds would send the
# instances to it (a fake Vercel API that is not ours mints nothing, and
# the instances answer 503 for want of a token).
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
taken=0
check_port() { # check_port <port> <what it is for> <the variable that sets it>
	if port_taken "$1"; then
		echo "port $1 on 127.0.0.1 is taken; it is for $2: stop what listens there, or set $3 to free ports" >&2
		taken=1
	fi
}
check_port "$REDIS_PORT" "Redis" REDIS_PORT
check_port "$UPSTREAM_PORT" "the fake upstream" UPSTREAM_PORT
check_port "$VERCEL_PORT" "the fake Vercel API" VERCEL_PORT
for i in 0 1 2; do
	check_port "${PROXY_PORTS[$i]}" "instance $((i + 1))" PROXY_PORTS
	check_port "${ADMIN_PORTS[$i]}" "instance $((i + 1))'s admin endpoint" ADMIN_PORTS
done
[ $taken = 0 ] || exit 1

work=$(mktemp -d "${TMPDIR:-/tmp}/ai-gateway-auth-fleet.XXXXXX")
pids=()
redis_pid=
cleanup() {
	for pid in "${pids[@]}" $redis_pid; do kill "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}" $redis_pid; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

echo "== building caddy, the fake upstream and the fake Vercel API into $work"
go build -o "$work/caddy" ./cmd/caddy
go build -o "$work/upstream" ./bench/upstream
go build -o "$work/fakevercel" ./examples/fleet/fakevercel

redis_password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
start_redis() {
	redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
		--requirepass "$redis_password" --dir "$work" >"$work/redis.log" 2>&1 &
	redis_pid=$!
}
start_redis
"$work/upstream" -addr "127.0.0.1:$UPSTREAM_PORT" >"$work/upstream.log" 2>&1 &
pids+=($!)
"$work/fakevercel" -addr "127.0.0.1:$VERCEL_PORT" -ttl "${TOKEN_TTL}s" >"$work/vercel.log" 2>&1 &
pids+=($!)
# the helpers answer before the instances start: a first mint that finds
# no fake Vercel API would fail and back off
for what in "Redis:$REDIS_PORT:redis.log" "the fake upstream:$UPSTREAM_PORT:upstream.log" "the fake Vercel API:$VERCEL_PORT:vercel.log"; do
	IFS=: read -r name port log <<<"$what"
	for _ in $(seq 100); do
		port_taken "$port" && break
		sleep 0.1
	done
	port_taken "$port" || { echo "$name did not start on 127.0.0.1:$port:" >&2; cat "$work/$log" >&2; exit 1; }
done

# Secrets from the environment, as in production: the Caddyfile names
# them with {env.X}, so neither the config nor the admin API shows them.
export VERCEL_PROJECT_ID=prj_fleetdemo VERCEL_TEAM_ID=team_fleetdemo VERCEL_TOKEN=fake-vercel-access-token
export CLIENT_KEY_SECRET=$(head -c 32 /dev/urandom | base64)
export LIMITS_REDIS_URL="redis://:$redis_password@127.0.0.1:$REDIS_PORT/0"

for i in 0 1 2; do
	FLEET_PORT=${PROXY_PORTS[$i]} FLEET_ADMIN=${ADMIN_PORTS[$i]} FLEET_STORAGE="$work/storage" \
		FLEET_VERCEL_API="http://127.0.0.1:$VERCEL_PORT" FLEET_UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT" \
		HOME="$work/home$i" XDG_DATA_HOME="$work/data$i" XDG_CONFIG_HOME="$work/config$i" \
		"$work/caddy" run --config examples/fleet/local.Caddyfile --adapter caddyfile >"$work/caddy$i.log" 2>&1 &
	pids+=($!)
done

# status prints an instance's status route (200: it has a token; 503:
# it is up, with none yet).
status() { curl -s "http://127.0.0.1:${ADMIN_PORTS[$1]}/ai_gateway_auth/status"; }
status_code() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${ADMIN_PORTS[$1]}/ai_gateway_auth/status"; }
# limits_line prints an instance's "limits" object on one line.
limits_line() { status "$1" | tr -d '\n' | grep -o '"limits":{[^}]*}' || echo '(no status)'; }
# Each instance is started when its admin endpoint answers, and ready when
# its status is 200: the status route starts its token source (the first
# mint) and its first connection to Redis. On a busy machine the first
# mint, behind the storage lock the three share, can take a few seconds.
for i in 0 1 2; do
	code=000
	for _ in $(seq 300); do
		code=$(status_code "$i") || true
		[ "$code" = 200 ] && break
		sleep 0.1
	done
	case $code in
	200) ;;
	000)
		echo "instance $((i + 1)) did not start: nothing answers on its admin endpoint 127.0.0.1:${ADMIN_PORTS[$i]}" >&2
		cat "$work/caddy$i.log" >&2
		exit 1
		;;
	*)
		echo "instance $((i + 1)) started but has no token after 30 s (its status route answers $code):" >&2
		status "$i" >&2
		echo "the fake Vercel API's log:" >&2
		cat "$work/vercel.log" >&2
		exit 1
		;;
	esac
done
sleep 1
echo "== three instances up: ${PROXY_PORTS[*]} (admin ${ADMIN_PORTS[*]})"
for i in 0 1 2; do echo "   instance $((i + 1)): $(limits_line "$i")"; done

key() { "$work/caddy" ai-gateway-auth client-key "$1" 2>/dev/null; }
# ask <instance 0-2> <client key>: one chat completion; prints the status code.
ask() {
	curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PROXY_PORTS[$1]}/v1/chat/completions" \
		-H "Authorization: Bearer $2" -H 'Content-Type: application/json' \
		-d '{"model":"openai/gpt-5","messages":[{"role":"user","content":"hi"}]}'
}

echo
echo "== 1. one limit for the fleet: sandbox-1 may send 6 requests a minute; it sends 9, to instances 1,2,3,1,2,3,..."
k=$(key sandbox-1)
codes=()
for n in $(seq 0 8); do codes+=("$(ask $((n % 3)) "$k")"); done
echo "   answers: ${codes[*]}"
retry=$(curl -s -D - -o /dev/null "http://127.0.0.1:${PROXY_PORTS[0]}/v1/chat/completions" -H "Authorization: Bearer $k" \
	-H 'Content-Type: application/json' -d '{"model":"openai/gpt-5","messages":[]}' | tr -d '\r' | sed -n 's/^Retry-After: //Ip')
echo "   a 10th request: Retry-After $retry s (alone, each instance would have answered 6: 18 in all)"

echo
echo "== 2. one mint per rotation: $ROTATIONS rotations of ${TOKEN_TTL}s tokens, a request every 12 s (to instances 1,2,3,1,...: under the 6 a minute)"
t=$(key traffic)
mints_before=$(curl -s "http://127.0.0.1:$VERCEL_PORT/stats" | grep -o '[0-9]\+')
served=0 failed=0
end=$((SECONDS + ROTATIONS * (TOKEN_TTL - 5) + 2))
n=0
while [ $SECONDS -lt $end ]; do
	if [ "$(ask $((n % 3)) "$t")" = 200 ]; then served=$((served + 1)); else failed=$((failed + 1)); fi
	n=$((n + 1))
	sleep 12
done
mints=$(curl -s "http://127.0.0.1:$VERCEL_PORT/stats" | grep -o '[0-9]\+')
echo "   $served requests answered 200, $failed not; the Vercel API minted $((mints - mints_before)) tokens in that time ($mints since the start)"
echo "   (three instances minting alone would have minted about $((3 * ROTATIONS)))"
for i in 0 1 2; do
	echo "   instance $((i + 1)) uses the token that expires $(status "$i" | tr -d '\n' | grep -o '"expires":"[^"]*"' | head -1)"
done

echo
echo "== 3. Redis stopped: each instance counts alone and says so"
kill "$redis_pid"
wait "$redis_pid" 2>/dev/null || true
redis_pid=
k=$(key sandbox-2)
codes=()
for n in $(seq 0 8); do codes+=("$(ask $((n % 3)) "$k")"); done
echo "   sandbox-2 sends 9: ${codes[*]} (each instance allows 6 on its own now)"
echo "   instance 1: $(limits_line 0)"
start_redis
sleep 2 # the instances probe Redis about once a second
echo "   Redis back (empty): instance 1: $(limits_line 0)"
k=$(key sandbox-3)
codes=()
for n in $(seq 0 8); do codes+=("$(ask $((n % 3)) "$k")"); done
echo "   sandbox-3 sends 9: ${codes[*]} (fleet-wide again)"

echo
echo "== the instances' log lines about the limits store:"
grep -h 'limits store' "$work"/caddy*.log | sed -e 's/^/   /' | cut -c1-220 || true
if grep -q "$redis_password" "$work"/caddy*.log; then
	echo "!! the Redis password appears in a log" >&2
	exit 1
fi
echo "== done; stopping everything"
