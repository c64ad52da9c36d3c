#!/usr/bin/env bash
# bench/run.sh: throughput and latency of ai_gateway_auth next to plain
# Caddy and nginx, all in front of the same local fake upstream.
#
#   bench/run.sh                                # 10 rounds x 3 s per target and variant, ~7 min
#   DURATION=2 ROUNDS=3 WARMUP=1 bench/run.sh   # a quick look
#   BODY=0 bench/run.sh                         # tiny requests instead of agent-sized ones
#   OPTIONS="retry_memory_limit 1GiB" bench/run.sh   # every body copied for a replay, whatever the load
#
# Prints a Markdown table per variant (plain JSON answers, SSE streams)
# with the median over the rounds, then the ratios of the module to plain
# Caddy (the median of the per-round ratios). See bench/README.md.
set -euo pipefail

DURATION=${DURATION:-3}              # seconds per measured run
ROUNDS=${ROUNDS:-10}                 # each round runs every target once; see ROUND_ORDER
WARMUP=${WARMUP:-3}                  # seconds of unmeasured load per target before the rounds
CONNECTIONS=${CONNECTIONS:-64}       # wrk connections, non-streamed variant
SSE_CONNECTIONS=${SSE_CONNECTIONS:-16}   # wrk connections, SSE variant
SSE_CHUNKS=${SSE_CHUNKS:-5}          # chunks per streamed answer (then [DONE])
SSE_DELAY=${SSE_DELAY:-0s}           # pause before each chunk (Go duration)
BODY=${BODY:-256KiB}                 # request body: bytes, or with KiB / MiB; 0: a ~100-byte request
PIN=${PIN:-1}                        # 1: pin proxies to PROXY_CPUS, wrk and upstream to LOAD_CPUS
PROXY_CPUS=${PROXY_CPUS:-0}
LOAD_CPUS=${LOAD_CPUS:-1}
WRK_THREADS=${WRK_THREADS:-1}
BASE_PORT=${BASE_PORT:-18080}        # uses BASE_PORT .. BASE_PORT+14 on 127.0.0.1
PROFILE=${PROFILE:-0}                # 1: also take a CPU profile of (2), (3), (4) after the rounds
PROFILE_TARGETS=${PROFILE_TARGETS:-"caddy static oidc"}   # which: caddy static oidc spend
PROFILE_VARIANT=${PROFILE_VARIANT:-json}                  # under which load: json or sse
VARIANTS=${VARIANTS:-"json sse"}
OPTIONS=${OPTIONS:-}                 # more ai_gateway_auth options, e.g. "retry_memory_limit 1GiB"
LIMITS=${LIMITS:-1}                  # 1: (6) also has limits (every request reserves and settles); 0: metering alone
ONLY=${ONLY:-}                       # measure only these targets, e.g. "static spend" for the spend ratio alone
# CADDY=/path/to/caddy uses that binary instead of building ./cmd/caddy.

cd "$(dirname "$0")/.."
case $BODY in
*MiB) BODY_BYTES=$((${BODY%MiB} << 20)) ;;
*KiB) BODY_BYTES=$((${BODY%KiB} << 10)) ;;
*) BODY_BYTES=$BODY ;;
esac
RESULTS_DIR=${RESULTS_DIR:-bench/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$RESULTS_DIR"
RESULTS_DIR=$(cd "$RESULTS_DIR" && pwd)

# --- tools -----------------------------------------------------------------
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ -x "$NGINX" ] || missing+=(nginx-light)
if ((${#missing[@]})); then
	sudo=""
	[ "$(id -u)" = 0 ] || sudo=sudo
	echo "installing ${missing[*]} from Debian's packages" >&2
	$sudo apt-get update -qq
	# nginx-light exists up to Debian 12; later releases only have nginx.
	if [[ " ${missing[*]} " == *" nginx-light "* ]] && ! apt-cache show nginx-light >/dev/null 2>&1; then
		missing=("${missing[@]/nginx-light/nginx}")
	fi
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2
	NGINX=$(command -v nginx || echo /usr/sbin/nginx)
fi

WORK=$(mktemp -d /tmp/ai-gateway-auth-bench.XXXXXX)
chmod 755 "$WORK" # nginx's workers may run as another user
PIDS=()
declare -A SPID # target name -> its server's pid
cleanup() {
	local pid
	for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "building into $WORK" >&2
if [ -n "${CADDY:-}" ]; then cp "$CADDY" "$WORK/caddy"; else go build -o "$WORK/caddy" ./cmd/caddy; fi
go build -o "$WORK/upstream" ./bench/upstream
go build -o "$WORK/mktoken" ./bench/mktoken

# --- servers ---------------------------------------------------------------
pin() { # pin CPUS CMD...: run CMD on CPUS when PIN=1
	local cpus=$1
	shift
	if [ "$PIN" = 1 ]; then taskset -c "$cpus" "$@"; else "$@"; fi
}
procs() { # GOMAXPROCS for a Go server pinned to CPUS
	if [ "$PIN" = 1 ]; then taskset -c "$1" nproc; else nproc; fi
}
start() { # start NAME CPUS CMD...: run in the background, log to $WORK/NAME.log
	local name=$1 cpus=$2 pre=()
	shift 2
	[ "$PIN" != 1 ] || pre=(taskset -c "$cpus") # taskset execs CMD: $! is CMD's pid
	"${pre[@]}" "$@" >"$WORK/$name.log" 2>&1 &
	PIDS+=($!)
	SPID[$name]=$!
}
wait_port() {
	local i
	for i in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
		sleep 0.1
	done
	echo "nothing listens on 127.0.0.1:$1; logs in $WORK" >&2
	exit 1
}

UP_PORT=$BASE_PORT
UPSTREAM_KEY=sk-bench-upstream-key
CLIENT_KEY=sk-placeholder
export AI_GATEWAY_API_KEY=$UPSTREAM_KEY
VERCEL_OIDC_TOKEN=$("$WORK/mktoken" -ttl 24h -jti bench)
export VERCEL_OIDC_TOKEN

TARGETS=(upstream caddy static oidc nginx spend)
declare -A LABEL=(
	[upstream]="(1) upstream directly"
	[caddy]="(2) Caddy reverse_proxy + header_up"
	[static]="(3) ai_gateway_auth, static key"
	[oidc]="(4) ai_gateway_auth, vercel_oidc"
	[nginx]="(5) nginx proxy_set_header"
	[spend]="(6) ai_gateway_auth, static key + reporting + $([ "$LIMITS" = 1 ] && echo limits || echo usage_metrics)"
)
declare -A PORT=([upstream]=$UP_PORT [caddy]=$((BASE_PORT + 1)) [static]=$((BASE_PORT + 2))
	[oidc]=$((BASE_PORT + 3)) [nginx]=$((BASE_PORT + 4)) [spend]=$((BASE_PORT + 5)))
declare -A ADMIN=([caddy]=$((BASE_PORT + 11)) [static]=$((BASE_PORT + 12)) [oidc]=$((BASE_PORT + 13)) [spend]=$((BASE_PORT + 14)))
declare -A AUTH=([upstream]="Bearer $UPSTREAM_KEY" [caddy]="Bearer $CLIENT_KEY" [static]="Bearer $CLIENT_KEY"
	[oidc]="Bearer $CLIENT_KEY" [nginx]="Bearer $CLIENT_KEY" [spend]="Bearer $CLIENT_KEY")

GOMAXPROCS=$(procs "$LOAD_CPUS") start upstream "$LOAD_CPUS" "$WORK/upstream" -addr "127.0.0.1:$UP_PORT" \
	-key "$UPSTREAM_KEY" -jwt -sse-chunks "$SSE_CHUNKS" -sse-delay "$SSE_DELAY"

# The three Caddy configs differ only in what sets the credential. The
# idle pool is raised from Caddy's default of 32 so that no config churns
# upstream connections at $CONNECTIONS concurrent requests.
caddyfile() { # caddyfile TARGET SITE_DIRECTIVES...
	local t=$1 header_up=""
	shift
	[ "$t" != caddy ] || header_up="header_up Authorization \"Bearer $UPSTREAM_KEY\""
	cat <<EOF
{
	admin 127.0.0.1:${ADMIN[$t]}
	persist_config off
}
http://:${PORT[$t]} {
	bind 127.0.0.1
$(printf '\t%s\n' "$@")
	reverse_proxy 127.0.0.1:$UP_PORT {
		transport http {
			keepalive_idle_conns_per_host 256
		}
		$header_up
	}
}
EOF
}
caddyfile caddy >"$WORK/caddy.Caddyfile"
caddyfile static "ai_gateway_auth {" "	credential static {env.AI_GATEWAY_API_KEY}" "	client_key $CLIENT_KEY" "	$OPTIONS" "}" \
	>"$WORK/static.Caddyfile"
caddyfile oidc "ai_gateway_auth {" "	credential vercel_oidc {" "		env VERCEL_OIDC_TOKEN" "	}" \
	"	client_key $CLIENT_KEY" "	$OPTIONS" "}" >"$WORK/oidc.Caddyfile"
# (6) is (3) with spend per client on: reporting headers, the usage
# scanner over every answer (the upstream's answers carry usage) and, with
# LIMITS=1, limits high enough never to refuse: every request reserves its
# worst case, priced from the upstream's catalog (`gateway`: the upstream,
# never AI Gateway), and settles from its answer.
spend_limits=()
if [ "$LIMITS" = 1 ]; then
	spend_limits=("	limits {" "		tokens_per_day 1000000000000000" "		tokens_per_month 1000000000000000"
		"		usd_per_day 1000000000" "		usd_per_month 1000000000" "		concurrent_requests 100000" "	}")
fi
caddyfile spend "ai_gateway_auth {" "	credential static {env.AI_GATEWAY_API_KEY}" "	client_key $CLIENT_KEY" \
	"	reporting {" "		tags bench" "	}" "	usage_metrics" "${spend_limits[@]}" \
	"	gateway http://127.0.0.1:$UP_PORT" "	$OPTIONS" "}" >"$WORK/spend.Caddyfile"
for t in caddy static oidc spend; do
	XDG_CONFIG_HOME=$WORK/xdg XDG_DATA_HOME=$WORK/xdg GOMAXPROCS=$(procs "$PROXY_CPUS") \
		start "$t" "$PROXY_CPUS" "$WORK/caddy" run --config "$WORK/$t.Caddyfile" --adapter caddyfile
done

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	upstream gateway {
		server 127.0.0.1:$UP_PORT;
		keepalive 256;
	}
	server {
		listen 127.0.0.1:${PORT[nginx]};
		client_max_body_size 64m;
		location / {
			proxy_pass http://gateway;
			proxy_request_buffering off; # stream the body upstream as it comes, like Caddy
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_set_header Authorization "Bearer $UPSTREAM_KEY";
			proxy_buffering off;   # stream SSE as it comes, like Caddy does
		}
	}
}
EOF
start nginx "$PROXY_CPUS" "$NGINX" -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" -g "daemon off;"

for t in "${TARGETS[@]}"; do wait_port "${PORT[$t]}"; done
url() { echo "http://127.0.0.1:${PORT[$1]}/v1/chat/completions"; }
for t in "${TARGETS[@]}"; do # every target answers, and the module refuses a wrong key
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: ${AUTH[$t]}" -d '{}' "$(url "$t")")
	# (6)'s first request starts its catalog read; with a dollar limit it is
	# refused 503 catalog_unavailable until the read is done
	for _ in $(seq 50); do
		[ "$code" = 503 ] || break
		sleep 0.2
		code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: ${AUTH[$t]}" -d '{}' "$(url "$t")")
	done
	[ "$code" = 200 ] || { echo "${LABEL[$t]}: HTTP $code, expected 200; logs in $WORK" >&2; exit 1; }
done
for t in static oidc spend; do
	code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer sk-wrong" -d '{}' "$(url "$t")")
	[ "$code" = 401 ] || { echo "${LABEL[$t]}: a wrong client key got HTTP $code, expected 401" >&2; exit 1; }
done
# Every target must pass SSE on as it comes: the upstream sends 4 chunks
# 250 ms apart, so the client should see them spread over ~0.75 s, not
# all at once at the end.
sse_spread() { # seconds between the first chunk and [DONE] at the client
	local line first=""
	curl -sN -H "Authorization: ${AUTH[$1]}" -d '{"stream":true}' "$(url "$1")?chunks=4&delay=250ms" |
		while IFS= read -r line; do
			case $line in
			"data: [DONE]"*) awk -v a="$first" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }' ;;
			data:*) [ -n "$first" ] || first=$(date +%s.%N) ;;
			esac
		done
}
NOT_STREAMING=()
for t in "${TARGETS[@]}"; do
	spread=$(sse_spread "$t")
	if awk -v s="${spread:-0}" 'BEGIN { exit !(s < 0.4) }'; then
		NOT_STREAMING+=("${LABEL[$t]} held an SSE answer back: its 4 chunks, sent over 0.75 s, reached the client within ${spread:-?} s")
		echo "WARNING: ${NOT_STREAMING[-1]}" >&2
	fi
done

# --- load ------------------------------------------------------------------
cpu_ticks() { # user+system CPU of a process and its children (nginx's worker), in clock ticks
	local pid total=0
	for pid in "$1" $(cat /proc/"$1"/task/*/children 2>/dev/null); do
		total=$((total + $(cut -d')' -f2- "/proc/$pid/stat" | awk '{ print $12 + $13 }')))
	done
	echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)
wrk_run() { # wrk_run TARGET VARIANT SECONDS: the RESULT line of bench/wrk.lua, plus the server's CPU per request
	local t=$1 variant=$2 secs=$3 conns=$CONNECTIONS mode=json line before
	if [ "$variant" = sse ]; then conns=$SSE_CONNECTIONS mode=stream; fi
	before=$(cpu_ticks "${SPID[$t]}")
	line=$(pin "$LOAD_CPUS" wrk -t"$WRK_THREADS" -c"$conns" -d"${secs}s" -s bench/wrk.lua "$(url "$t")" \
		-- "${AUTH[$t]}" "$mode" "$BODY_BYTES" | grep '^RESULT')
	awk -v l="$line" -v ticks="$(($(cpu_ticks "${SPID[$t]}") - before))" -v hz="$CLK_TCK" 'BEGIN {
		match(l, /requests=[0-9]+/); n = substr(l, RSTART + 9, RLENGTH - 9)
		printf "%s cpu_us=%.1f\n", l, (n > 0 ? ticks * 1e6 / hz / n : 0) }'
}

cpus=$(nproc)
echo "machine: $cpus CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)); pin=$PIN" \
	"proxy CPUs=$PROXY_CPUS, wrk+upstream CPUs=$LOAD_CPUS" >&2
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
RAW=$RESULTS_DIR/raw.tsv
# (2) runs between (3) and (4), (6) next to (3), and every other round
# runs backwards, so that the two sides of every ratio run next to each
# other in time and slow drifts in the machine's load cancel out of the
# per-round ratios.
ROUND_ORDER=(upstream spend static caddy oidc nginx)
REVERSED_ORDER=(nginx oidc caddy static spend upstream)
declare -A MEASURED
if [ -n "$ONLY" ]; then
	only() { local t; for t in "$@"; do [[ " $ONLY " != *" $t "* ]] || echo "$t"; done; }
	mapfile -t ROUND_ORDER < <(only "${ROUND_ORDER[@]}")
	mapfile -t REVERSED_ORDER < <(only "${REVERSED_ORDER[@]}")
	((${#ROUND_ORDER[@]})) || { echo "ONLY=\"$ONLY\" names no target (names: ${TARGETS[*]})" >&2; exit 1; }
fi
for t in "${ROUND_ORDER[@]}"; do MEASURED[$t]=1; done
printf 'variant\ttarget\tround\trps\tp50_us\tp99_us\tsocket_errors\tnon2xx\tcpu_us_per_req\n' >"$RAW"
for variant in $VARIANTS; do
	echo "warming up ($variant, ${WARMUP}s per target)" >&2
	for t in "${ROUND_ORDER[@]}"; do wrk_run "$t" "$variant" "$WARMUP" >/dev/null; done
	for r in $(seq "$ROUNDS"); do
		order=("${ROUND_ORDER[@]}")
		if ((r % 2 == 0)); then order=("${REVERSED_ORDER[@]}"); fi
		for t in "${order[@]}"; do
			line=$(wrk_run "$t" "$variant" "$DURATION")
			echo "$variant round $r ${LABEL[$t]}: $line" >&2
			printf '%s\t%s\t%s\t%s\n' "$variant" "$t" "$r" \
				"$(sed -E 's/.*rps=([0-9.]+) p50_us=([0-9]+) p99_us=([0-9]+) socket_errors=([0-9]+) non2xx=([0-9]+) cpu_us=([0-9.]+).*/\1\t\2\t\3\t\4\t\5\t\6/' <<<"$line")" >>"$RAW"
		done
	done
done

if [ "$PROFILE" = 1 ]; then
	for t in $PROFILE_TARGETS; do
		echo "profiling ${LABEL[$t]} for ${DURATION}s" >&2
		wrk_run "$t" "$PROFILE_VARIANT" "$DURATION" >/dev/null &
		curl -s -o "$RESULTS_DIR/cpu-$t.pprof" \
			"http://127.0.0.1:${ADMIN[$t]}/debug/pprof/profile?seconds=$((DURATION > 3 ? DURATION - 2 : 1))"
		wait $!
		go tool pprof -top -nodecount=40 "$WORK/caddy" "$RESULTS_DIR/cpu-$t.pprof" >"$RESULTS_DIR/cpu-$t.txt" 2>/dev/null || true
	done
	cp "$WORK/caddy" "$RESULTS_DIR/caddy" # pprof needs the binary to read the profiles later
	echo "profiles: $RESULTS_DIR/cpu-*.pprof (top functions in cpu-*.txt)" >&2
fi

stats=$(curl -s "http://127.0.0.1:$UP_PORT/stats")
echo "$stats" >"$RESULTS_DIR/upstream-stats.json"
for t in caddy static oidc spend; do cp "$WORK/$t.Caddyfile" "$RESULTS_DIR/"; done
cp "$WORK/nginx.conf" "$RESULTS_DIR/"

# --- report ----------------------------------------------------------------
median() { # median VARIANT TARGET COLUMN
	awk -F'\t' -v v="$1" -v t="$2" -v c="$3" 'NR > 1 && $1 == v && $2 == t { print $c }' "$RAW" | sort -g |
		awk '{ a[NR] = $1 } END { print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2) }'
}
sum() { awk -F'\t' -v v="$1" -v c="$2" 'NR > 1 && $1 == v { s += $c } END { print s + 0 }' "$RAW"; }
ms() { awk -v us="$1" 'BEGIN { printf "%.2f ms", us / 1000 }'; }
round_ratios() { # round_ratios VARIANT TARGET COLUMN [BASE]: "median min max" of TARGET / BASE (default caddy), per round
	awk -F'\t' -v v="$1" -v t="$2" -v c="$3" -v base="${4:-caddy}" 'NR > 1 && $1 == v && $2 == base { b[$3] = $c }
		NR > 1 && $1 == v && $2 == t { a[$3] = $c }
		END { for (r in a) if (b[r] > 0) print a[r] / b[r] }' "$RAW" | sort -g |
		awk '{ x[NR] = $1 } END { printf "%.3f %.3f %.3f", (NR % 2 ? x[(NR + 1) / 2] : (x[NR / 2] + x[NR / 2 + 1]) / 2), x[1], x[NR] }'
}
verdict() { awk -v r="$1" -v op="$2" -v lim="$3" 'BEGIN { ok = (op == ">=") ? r >= lim : r <= lim; print (ok ? "met" : "missed") }'; }

{
	echo
	echo "## ai_gateway_auth benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $cpus CPUs, median of $ROUNDS rounds x ${DURATION}s)"
	echo
	echo "Pinning: $([ "$PIN" = 1 ] && echo "proxies on CPU $PROXY_CPUS, wrk and upstream on CPU $LOAD_CPUS" || echo none)." \
		"Load average (1/5/15 min) before the rounds: $LOAD_BEFORE; after: $(cut -d' ' -f1-3 /proc/loadavg)."
	for variant in $VARIANTS; do
		echo
		if [ "$variant" = json ]; then
			echo "### POST /v1/chat/completions ($BODY_BYTES-byte request), ~600-byte JSON answer, $CONNECTIONS connections"
		else
			echo "### POST /v1/chat/completions ($BODY_BYTES-byte request) with \"stream\":true, SSE ($SSE_CHUNKS chunks + [DONE], ${SSE_DELAY} apart), $SSE_CONNECTIONS connections"
		fi
		echo
		echo "| target | req/s | p50 | p99 | server CPU/req |"
		echo "|---|---:|---:|---:|---:|"
		for t in "${TARGETS[@]}"; do
			[ -n "${MEASURED[$t]:-}" ] || continue
			printf '| %s | %.0f | %s | %s | %.0f µs |\n' "${LABEL[$t]}" "$(median "$variant" "$t" 4)" \
				"$(ms "$(median "$variant" "$t" 5)")" "$(ms "$(median "$variant" "$t" 6)")" "$(median "$variant" "$t" 9)"
		done
		errs=$(($(sum "$variant" 7) + $(sum "$variant" 8)))
		[ "$errs" = 0 ] || echo "WARNING: $errs socket errors or non-2xx answers in the $variant runs (see $RAW)"
		if [ "$variant" = sse ]; then
			for w in "${NOT_STREAMING[@]}"; do echo "WARNING: $w, so its SSE figures are not comparable"; done
		fi
	done
	echo
	echo "Upstream saw: $stats"
	echo
	echo "### Ratios to (2) plain Caddy (targets: req/s >= 0.97, p99 <= 1.05)"
	echo
	echo "Median of the $ROUNDS per-round ratios, and in brackets the lowest and highest round."
	echo
	echo "| | req/s ratio | p99 ratio | CPU/req ratio |"
	echo "|---|---:|---:|---:|"
	for variant in $VARIANTS; do
		for t in static oidc; do
			[ -n "${MEASURED[caddy]:-}" ] && [ -n "${MEASURED[$t]:-}" ] || continue
			read -r rr rlo rhi <<<"$(round_ratios "$variant" "$t" 4)"
			read -r pr plo phi <<<"$(round_ratios "$variant" "$t" 6)"
			read -r cr clo chi <<<"$(round_ratios "$variant" "$t" 9)"
			echo "| ${LABEL[$t]}, $variant | $rr $(verdict "$rr" ">=" 0.97) [$rlo, $rhi] |" \
				"$pr $(verdict "$pr" "<=" 1.05) [$plo, $phi] | $cr [$clo, $chi] |"
		done
	done
	echo
	echo "### Spend per client: (6) to (3), the same module without reporting, metering and limits (target: CPU/req <= 1.10)"
	echo
	echo "| | req/s ratio | p99 ratio | CPU/req ratio |"
	echo "|---|---:|---:|---:|"
	for variant in $VARIANTS; do
		[ -n "${MEASURED[static]:-}" ] && [ -n "${MEASURED[spend]:-}" ] || continue
		read -r rr rlo rhi <<<"$(round_ratios "$variant" spend 4 static)"
		read -r pr plo phi <<<"$(round_ratios "$variant" spend 6 static)"
		read -r cr clo chi <<<"$(round_ratios "$variant" spend 9 static)"
		echo "| ${LABEL[spend]}, $variant | $rr [$rlo, $rhi] | $pr [$plo, $phi] | $cr $(verdict "$cr" "<=" 1.10) [$clo, $chi] |"
	done
	echo
	echo "CPU/req is the proxy process's user+system CPU time over a run divided by its requests; it is"
	echo "steadier than req/s when other work shares the machine. At full load a CPU/req ratio above 1.031"
	echo "means the proxy cannot reach 0.97 of plain Caddy's throughput."
} | tee "$RESULTS_DIR/results.md"

mismatches=$(sed -E 's/.*"mismatches":([0-9]+).*/\1/' <<<"$stats")
if [ "$mismatches" != 0 ]; then
	echo "FAILED: $mismatches requests reached the upstream without the injected credential" >&2
	exit 1
fi
