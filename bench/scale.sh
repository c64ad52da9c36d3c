#!/usr/bin/env bash
# bench/scale.sh: hold many concurrent SSE streams, each opened with an
# agent-sized request body, through plain Caddy and through
# ai_gateway_auth (static key, then vercel_oidc read from a file, whose
# token file is rotated halfway), one fresh proxy process after the other;
# prints each one's peak RSS above idle per open stream and the module's
# ratios to plain Caddy.
#
#   bench/scale.sh                                      # 2,000 streams of 30 s, 256 KiB bodies
#   STREAMS=300 DURATION=8 BODY=1MiB bench/scale.sh     # agent streams with 1 MiB conversations
#   RAMP=4 ROUNDS=3 bench/scale.sh                      # streams opened over 4 s; median of 3 rounds
#   STREAMS=200 DURATION=5 TARGETS=oidc bench/scale.sh  # the quick version, for CI
#   OPTIONS="retry_memory_limit 64MiB" bench/scale.sh  # more options for the module's block
#
# Exits non-zero if a stream fails, a request reaches the upstream without
# the injected credential, or the rotated token is never used.
set -euo pipefail

# CADDY=/path/to/caddy uses that binary instead of building ./cmd/caddy.
STREAMS=${STREAMS:-2000}
DURATION=${DURATION:-30}          # seconds each stream lasts: one chunk a second
BODY=${BODY:-256KiB}              # request body per stream: bytes, or with KiB / MiB
RAMP=${RAMP:-0}                   # seconds over which the streams are opened; 0: all at once
ROUNDS=${ROUNDS:-1}               # runs per target, interleaved; the table shows the median
TARGETS=${TARGETS:-"caddy static oidc"}
OPTIONS=${OPTIONS:-}              # more ai_gateway_auth options, e.g. "retry_memory_limit 64MiB"
BASE_PORT=${BASE_PORT:-18179}     # uses BASE_PORT .. BASE_PORT+6 on 127.0.0.1

cd "$(dirname "$0")/.."
case $BODY in
*MiB) BODY_BYTES=$((${BODY%MiB} << 20)) ;;
*KiB) BODY_BYTES=$((${BODY%KiB} << 10)) ;;
*) BODY_BYTES=$BODY ;;
esac
# Every stream is a client socket, two in the proxy and one in the upstream.
need=$((STREAMS + 1000))
if [ "$(ulimit -n)" -lt "$need" ]; then
	ulimit -n "$(ulimit -Hn)"
	[ "$(ulimit -n)" -ge "$need" ] || { echo "ulimit -n is $(ulimit -n); $STREAMS streams need $need" >&2; exit 1; }
fi

WORK=$(mktemp -d /tmp/ai-gateway-auth-scale.XXXXXX)
PIDS=()
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ -n "${CADDY:-}" ]; then cp "$CADDY" "$WORK/caddy"; else go build -o "$WORK/caddy" ./cmd/caddy; fi
go build -o "$WORK/upstream" ./bench/upstream
go build -o "$WORK/mktoken" ./bench/mktoken
go build -o "$WORK/scale" ./bench/scale

UP_PORT=$BASE_PORT
UPSTREAM_KEY=sk-bench-upstream-key
export AI_GATEWAY_API_KEY=$UPSTREAM_KEY
declare -A LABEL=(
	[caddy]="(2) Caddy reverse_proxy + header_up"
	[static]="(3) ai_gateway_auth, static key"
	[oidc]="(4) ai_gateway_auth, vercel_oidc (file)"
)
declare -A PORT=([caddy]=$((BASE_PORT + 1)) [static]=$((BASE_PORT + 2)) [oidc]=$((BASE_PORT + 3)))
declare -A ADMIN=([caddy]=$((BASE_PORT + 4)) [static]=$((BASE_PORT + 5)) [oidc]=$((BASE_PORT + 6)))
declare -A LIMIT=([static]=1.05 [oidc]=1.15) # targets: module / plain Caddy, per stream

# The three configs differ only in what sets the credential (as in run.sh).
caddyfile() { # caddyfile TARGET
	local t=$1 handler="" header_up=""
	case $t in
	caddy) header_up="header_up Authorization \"Bearer $UPSTREAM_KEY\"" ;;
	static) handler=$'ai_gateway_auth {\n\t\tcredential static {env.AI_GATEWAY_API_KEY}\n\t\tclient_key sk-placeholder\n\t\tgateway http://127.0.0.1:'"$UP_PORT"$'\n\t\t'"$OPTIONS"$'\n\t}' ;;
	oidc) handler=$'ai_gateway_auth {\n\t\tcredential vercel_oidc {\n\t\t\tfile '"$WORK"$'/oidc-token\n\t\t}\n\t\tclient_key sk-placeholder\n\t\tgateway http://127.0.0.1:'"$UP_PORT"$'\n\t\t'"$OPTIONS"$'\n\t}' ;;
	esac
	cat <<CADDYFILE
{
	admin 127.0.0.1:${ADMIN[$t]}
	persist_config off
}
http://:${PORT[$t]} {
	bind 127.0.0.1
	$handler
	reverse_proxy 127.0.0.1:$UP_PORT {
		$header_up
	}
}
CADDYFILE
}
wait_port() {
	local i
	for i in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1" >&2
	exit 1
}

"$WORK/upstream" -addr "127.0.0.1:$UP_PORT" -key "$UPSTREAM_KEY" -jwt -sse-chunks "$DURATION" -sse-delay 1s \
	>"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_port "$UP_PORT"

ROTATE_MS=$(((RAMP + DURATION / 2) * 1000 + DURATION % 2 * 500)) # all streams open, half of each to go
declare -A PER_STREAM # target -> per-stream figures of its rounds, space-separated
ORDER=($TARGETS)
for round in $(seq "$ROUNDS"); do
	for t in "${ORDER[@]}"; do
		caddyfile "$t" >"$WORK/$t.Caddyfile"
		flags=(-expect key)
		if [ "$t" = oidc ]; then
			"$WORK/mktoken" -jti old -ttl 1h >"$WORK/oidc-token"
			flags=(-expect jwt:old -token-file "$WORK/oidc-token" -rotate-after "${ROTATE_MS}ms")
		fi
		XDG_CONFIG_HOME=$WORK/xdg XDG_DATA_HOME=$WORK/xdg \
			"$WORK/caddy" run --config "$WORK/$t.Caddyfile" --adapter caddyfile >"$WORK/$t.log" 2>&1 &
		caddy_pid=$!
		PIDS+=("$caddy_pid")
		wait_port "${PORT[$t]}"

		echo
		echo "== round $round, ${LABEL[$t]}: $STREAMS SSE streams of ${DURATION}s opened over ${RAMP}s," \
			"$BODY_BYTES-byte request bodies$([ "$t" != oidc ] || echo ", token file rotated at $((ROTATE_MS / 1000)).$((ROTATE_MS % 1000 / 100))s")"
		"$WORK/scale" -url "http://127.0.0.1:${PORT[$t]}/v1/chat/completions" -stats "http://127.0.0.1:$UP_PORT/stats" \
			-streams "$STREAMS" -chunks "$DURATION" -body "$BODY_BYTES" -ramp "${RAMP}s" -pid "$caddy_pid" \
			-timeout "$((RAMP + DURATION + 60))s" "${flags[@]}" | tee "$WORK/$t.out" || {
			status=$?
			echo "--- proxy log (last 20 lines)" >&2
			tail -20 "$WORK/$t.log" >&2
			exit "$status"
		}
		PER_STREAM[$t]+="$(sed -n 's/^RESULT .*per_stream_kib=\([0-9.]*\).*/\1/p' "$WORK/$t.out") "
		kill "$caddy_pid"
		wait "$caddy_pid" 2>/dev/null || true
	done
	# every other round backwards, so that a drift in the machine's load
	# does not always favour the same target
	ORDER=($(printf '%s\n' "${ORDER[@]}" | tac))
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { printf "%.1f", (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

echo
echo "## Peak RSS above idle per open stream ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
echo
echo "$STREAMS streams of ${DURATION}s opened over ${RAMP}s, request body $BODY ($BODY_BYTES bytes), a fresh proxy" \
	"process per run; median of $ROUNDS round(s), each round's figures in brackets."
echo
echo "| target | per stream | ratio to (2) |"
echo "|---|---:|---:|"
base=$(median <<<"${PER_STREAM[caddy]:-}")
for t in $TARGETS; do
	ratio="" mid=$(median <<<"${PER_STREAM[$t]}")
	if [ "$t" != caddy ] && [ -n "${PER_STREAM[caddy]:-}" ]; then
		ratio=$(awk -v a="$mid" -v b="$base" -v lim="${LIMIT[$t]}" 'BEGIN {
			r = (b > 0 ? a / b : 0); printf "%.2f (target <= %s: %s)", r, lim, (r <= lim ? "met" : "missed") }')
	fi
	printf '| %s | %s KiB [%s] | %s |\n' "${LABEL[$t]}" "$mid" "$(xargs <<<"${PER_STREAM[$t]}")" "$ratio"
done
