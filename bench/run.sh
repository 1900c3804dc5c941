#!/usr/bin/env bash
# hookrelay benchmark: direct vs. relayed webhook throughput and latency, a 25 MB body, and
# server memory per idle agent. Everything runs on 127.0.0.1 and is stopped on exit.
#
#   bench/run.sh                      # about two minutes on a 2-core machine
#   DURATION=30 bench/run.sh          # longer measurement per path
#
# Knobs (environment): DURATION (s per wrk run, default 10), WARMUP (s, 2), CONNS (64),
# THREADS (wrk threads, 2), C1_DURATION (s of the single-connection run, 5; 0 skips it),
# BIG_BYTES (25000000), BIG_RUNS (3), AGENTS (2000), SKIP_BUILD (1 = use existing binaries),
# FSYNC (true: the relay's SQLite store flushes each group commit; false), NO_MEMSTORE (1 = skip
# the second relay run with `--store memory`, the store-off baseline),
# NO_BORE (1 = skip bore even if it is installed), KEEP_WORK (1 = keep logs), RUST_LOG (unset:
# each binary logs at its default level, relay-server info and relay-client warn, as users run
# them; relay-server's log goes to a file).
#
# Needs: cargo, curl, wrk (installed with apt-get when missing and running as root). bore
# (`cargo install bore-cli`, >= 0.6 for --bind-addr) is measured too when it is on the PATH.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
C1_DURATION=${C1_DURATION:-5}
BIG_BYTES=${BIG_BYTES:-25000000}
BIG_RUNS=${BIG_RUNS:-3}
AGENTS=${AGENTS:-2000}
SKIP_BUILD=${SKIP_BUILD:-0}
FSYNC=${FSYNC:-true}
NO_MEMSTORE=${NO_MEMSTORE:-0}
NO_BORE=${NO_BORE:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
LUA=$ROOT/bench/post1k.lua
WORK=$(mktemp -d "${TMPDIR:-/tmp}/hookrelay-bench.XXXXXX")
BORE_CONTROL_PORT=7835 # fixed in bore; it cannot be changed from the command line

PIDS=()

die() {
    echo "error: $*" >&2
    exit 1
}

cleanup() {
    stop_all
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        echo "logs kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------------------------------------
# Prerequisites and build

command -v curl >/dev/null || die "curl is required"
command -v ss >/dev/null || die "ss (iproute2) is required"
need_tool wrk

# Each idle agent is one descriptor on the server and one in idle-agents.
hard=$(ulimit -Hn)
want=65536
[[ $hard != unlimited ]] && ((hard < want)) && want=$hard
ulimit -n "$want" || die "cannot raise the open-files limit to $want"
((want >= AGENTS + 256)) || die "open-files limit $want is too low for $AGENTS agents"

build relay-server relay-client bench-target idle-agents

# ---------------------------------------------------------------------------------------------
# Machine

print_header "hookrelay benchmark"
echo "- load: wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, POST with a 1,024-byte body" \
    "(bench/post1k.lua), after a ${WARMUP}s warm-up; target: bench-target (hyper, reads the body)"
echo

# ---------------------------------------------------------------------------------------------
# Start target, relay server and agent

TPORT_FILE=$WORK/target.out
"$BIN/bench-target" 0 >"$TPORT_FILE" 2>"$WORK/target.err" &
TARGET_PID=$!
PIDS+=("$TARGET_PID")
wait_until 10 "bench-target" grep -q '^LISTENING ' "$TPORT_FILE"
TPORT=$(awk '/^LISTENING/ {print $2}' "$TPORT_FILE")

start_relay relay --data-dir "$WORK/data" --fsync "$FSYNC"
SPORT=$RELAY_PORT
SERVER_PID=$RELAY_SERVER_PID
CLIENT_PID=$RELAY_CLIENT_PID
RELAY_URL="http://127.0.0.1:$SPORT/h/bench/hook"
DIRECT_URL="http://127.0.0.1:$TPORT/hook"

BORE=0
BORE_URL=
if [[ $NO_BORE == 1 ]]; then
    note "bore skipped (NO_BORE=1)."
elif ! command -v bore >/dev/null; then
    note "bore not on the PATH, not measured (\`cargo install bore-cli\` to include it)."
elif ! bore server --help 2>&1 | grep -q -- '--bind-addr'; then
    note "bore found but too old to bind loopback only (--bind-addr, bore-cli >= 0.6); skipped rather than open a public port."
elif ! port_free "$BORE_CONTROL_PORT"; then
    note "bore skipped: its fixed control port $BORE_CONTROL_PORT is in use."
else
    BPORT=$(free_port)
    bore server --bind-addr 127.0.0.1 --min-port "$BPORT" --max-port "$BPORT" \
        >"$WORK/bore-server.log" 2>&1 &
    BORE_SERVER_PID=$!
    PIDS+=("$BORE_SERVER_PID")
    wait_until 10 "bore server" port_listening "$BORE_CONTROL_PORT"
    bore local "$TPORT" --local-host 127.0.0.1 --to 127.0.0.1 --port "$BPORT" \
        >"$WORK/bore-local.log" 2>&1 &
    BORE_LOCAL_PID=$!
    PIDS+=("$BORE_LOCAL_PID")
    BORE_URL="http://127.0.0.1:$BPORT/hook"
    wait_until 10 "bore tunnel" curl -sf -X POST --data x "$BORE_URL"
    BORE=1
    note "bore: $(bore --version 2>/dev/null || echo bore), \`bore server --bind-addr 127.0.0.1\` + \`bore local $TPORT --to 127.0.0.1\`."
fi

# ---------------------------------------------------------------------------------------------
# Throughput and latency

# measure checks, after each run, that the relay it measured is still up.
check_alive() {
    alive "$SERVER_PID" relay-server "$WORK/relay-server.err"
    alive "$CLIENT_PID" relay-client "$WORK/relay-client.err"
}

print_table() { # TITLE SUFFIX
    local title=$1 sfx=$2 key name
    echo "## $title"
    echo
    echo "| path | req/s | p50 | p99 | ratio vs direct | added p50 |"
    echo "|---|---:|---:|---:|---:|---:|"
    for name in direct hookrelay memstore bore; do
        key=$name$sfx
        [[ -n ${RPS[$key]:-} ]] || continue
        label=$name
        [[ $name == hookrelay ]] && label="hookrelay (SQLite store, fsync $FSYNC)"
        [[ $name == memstore ]] && label="hookrelay (memory store)"
        awk -v name="$label" -v rps="${RPS[$key]}" -v p50="${P50[$key]}" -v p99="${P99[$key]}" \
            -v drps="${RPS[direct$sfx]}" -v dp50="${P50[direct$sfx]}" "$AWK_FORMAT"'
            BEGIN {
                added = name == "direct" ? "-" : sprintf("%+.2f ms", p50 - dp50)
                printf "| %s | %s | %s | %s | %.2fx | %s |\n", name, grp(rps), lat(p50), lat(p99), rps / drps, added
            }'
    done
    echo
}

echo "running: ${CONNS} connections, ${DURATION}s per path..." >&2
t0=$(cpu_ticks "$TARGET_PID")
measure direct direct "$DIRECT_URL" "$THREADS" "$CONNS" "$DURATION"
direct_target_ticks=$(($(cpu_ticks "$TARGET_PID") - t0))
lines_before=$(grep -c '' "$WORK/relay-client.out" || true)
read -r s0 c0 t0 < <(echo "$(cpu_ticks "$SERVER_PID") $(cpu_ticks "$CLIENT_PID") $(cpu_ticks "$TARGET_PID")")
measure hookrelay hookrelay "$RELAY_URL" "$THREADS" "$CONNS" "$DURATION"
read -r s1 c1 t1 < <(echo "$(cpu_ticks "$SERVER_PID") $(cpu_ticks "$CLIENT_PID") $(cpu_ticks "$TARGET_PID")")
lines_after=$(grep -c '' "$WORK/relay-client.out" || true)
LOAD_HWM=$(hwm_kib "$SERVER_PID")
((BORE)) && measure bore bore "$BORE_URL" "$THREADS" "$CONNS" "$DURATION"

# The same relay with the store off (`--store memory`): what durability costs.
if [[ $NO_MEMSTORE != 1 ]]; then
    start_relay memstore --store memory
    measure memstore "hookrelay (memory store)" "http://127.0.0.1:$RELAY_PORT/h/bench/hook" "$THREADS" "$CONNS" "$DURATION"
    stop "$RELAY_CLIENT_PID"
    stop "$RELAY_SERVER_PID"
fi
STORE_BYTES=$(du -sb "$WORK/data" | awk '{print $1}')

if ((C1_DURATION > 0)); then
    echo "running: 1 connection, ${C1_DURATION}s per path..." >&2
    measure direct_c1 direct "$DIRECT_URL" 1 1 "$C1_DURATION"
    measure hookrelay_c1 hookrelay "$RELAY_URL" 1 1 "$C1_DURATION"
    ((BORE)) && measure bore_c1 bore "$BORE_URL" 1 1 "$C1_DURATION"
fi

print_table "1 KB POST, $CONNS connections, ${DURATION}s" ""
((C1_DURATION > 0)) && print_table "1 KB POST, 1 connection (unloaded latency), ${C1_DURATION}s" "_c1"
# Ticks include the warm-up, so divide by the requests of warm-up + run, estimated from the
# measured rate; close enough for a per-request cost.
awk -v hz="$(getconf CLK_TCK)" -v warm="$WARMUP" -v dur="$DURATION" \
    -v drps="${RPS[direct]}" -v rrps="${RPS[hookrelay]}" -v dt="$direct_target_ticks" \
    -v s="$((s1 - s0))" -v c="$((c1 - c0))" -v t="$((t1 - t0))" 'BEGIN {
    us = 1e6 / hz; dn = drps * (warm + dur); rn = rrps * (warm + dur)
    printf "CPU per request (user + system, warm-up included): direct: bench-target %.1f us;", dt * us / dn
    printf " hookrelay: relay-server %.1f us, relay-client %.1f us, bench-target %.1f us.\n\n", s * us / rn, c * us / rn, t * us / rn
}'
if [[ -n ${RPS[memstore]:-} ]]; then
    awk -v on="${RPS[hookrelay]}" -v off="${RPS[memstore]}" -v bytes="$STORE_BYTES" 'BEGIN {
        printf "The SQLite store costs %.1f%% of the relay'"'"'s throughput against the memory store;", (1 - on / off) * 100
        printf " its data dir held %.0f MiB after the runs.\n\n", bytes / 1048576
    }'
fi
echo "relay-client printed $((lines_after - lines_before)) delivery lines during the measured" \
    "hookrelay run (plus warm-up), wrk counted ${REQS[hookrelay]} responses;" \
    "relay-server peak RSS (VmHWM) under load: $((LOAD_HWM / 1024)) MiB."
echo

# ---------------------------------------------------------------------------------------------
# One large body

echo "running: ${BIG_BYTES}-byte body..." >&2
BIG=$WORK/big.bin
head -c "$BIG_BYTES" /dev/urandom >"$BIG"

big_post() { # URL -> seconds
    local url=$1 out=$WORK/big-resp.json code secs
    read -r code secs < <(curl -s -o "$out" -w '%{http_code} %{time_total}\n' -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' --data-binary "@$BIG" "$url")
    [[ $code == 200 ]] || die "large body to $url: HTTP $code: $(head -c 300 "$out")"
    grep -q "\"len\":${BIG_BYTES}[,}]" "$out" || die "large body to $url: target saw $(cat "$out")"
    echo "$secs"
}

echo "## One ${BIG_BYTES}-byte POST (curl, $BIG_RUNS runs each)"
echo
echo "| path | best | median | runs (s) |"
echo "|---|---:|---:|---|"
big_paths=(direct hookrelay)
((BORE)) && big_paths+=(bore)
for name in "${big_paths[@]}"; do
    case $name in
    direct) url=$DIRECT_URL ;;
    hookrelay) url=$RELAY_URL ;;
    bore) url=$BORE_URL ;;
    esac
    times=()
    for ((i = 0; i < BIG_RUNS; i++)); do
        t=$(big_post "$url")
        times+=("$t")
    done
    printf '%s\n' "${times[@]}" | sort -g | awk -v name="$name" -v bytes="$BIG_BYTES" '
        { t[NR] = $1; list = list (NR > 1 ? ", " : "") sprintf("%.3f", $1) }
        END {
            med = NR % 2 ? t[(NR + 1) / 2] : (t[NR / 2] + t[NR / 2 + 1]) / 2
            printf "| %s | %.0f MB/s | %.0f MB/s | %s |\n", name, bytes / 1e6 / t[1], bytes / 1e6 / med, list
        }'
done
echo
rm -f "$BIG"

# The load stack is done; stop it so the memory measurement runs on a quiet machine.
stop_all

# ---------------------------------------------------------------------------------------------
# Memory per idle agent, on a fresh server

echo "running: $AGENTS idle agents..." >&2
MPORT=$(free_port)
"$BIN/relay-server" --listen "127.0.0.1:$MPORT" --data-dir "$WORK/mem-data" 2>"$WORK/mem-server.err" >/dev/null &
MEM_PID=$!
PIDS+=("$MEM_PID")
wait_until 10 "relay-server /healthz" curl -sf "http://127.0.0.1:$MPORT/healthz"
rss_before=$(rss_kib "$MEM_PID")

"$BIN/idle-agents" "ws://127.0.0.1:$MPORT/ws" "$AGENTS" 300 >"$WORK/idle.out" 2>"$WORK/idle.err" &
IDLE_PID=$!
PIDS+=("$IDLE_PID")
idle_ready() {
    grep -q '^CONNECTED ' "$WORK/idle.out" && return 0
    kill -0 "$IDLE_PID" 2>/dev/null || die "idle-agents failed: $(tail -3 "$WORK/idle.err")"
    return 1
}
t0=$(now_ms)
wait_until 90 "$AGENTS idle agents" idle_ready
connect_ms=$(($(now_ms) - t0))

# Settled: three samples 200 ms apart within 64 KiB of each other (or 20 s, whichever first).
prev=$(rss_kib "$MEM_PID")
stable=0
deadline=$(($(now_ms) + 20000))
while ((stable < 3 && $(now_ms) < deadline)); do
    sleep 0.2
    cur=$(rss_kib "$MEM_PID")
    if ((cur - prev < 64 && prev - cur < 64)); then stable=$((stable + 1)); else stable=0; fi
    prev=$cur
done
rss_after=$prev
sockets=$(find "/proc/$MEM_PID/fd" -lname 'socket:*' 2>/dev/null | wc -l)
idle_rss=$(rss_kib "$IDLE_PID")
alive "$MEM_PID" relay-server "$WORK/mem-server.err"

echo "## Server memory per idle agent ($AGENTS agents)"
echo
awk -v b="$rss_before" -v a="$rss_after" -v n="$AGENTS" -v s="$sockets" -v ms="$connect_ms" \
    -v st="$stable" -v ir="$idle_rss" 'BEGIN {
    printf "| relay-server VmRSS before | after %d agents | per agent |\n|---:|---:|---:|\n", n
    printf "| %.1f MiB | %.1f MiB | %.1f KiB |\n\n", b / 1024, a / 1024, (a - b) / n
    printf "%d agents connected and welcomed in %.1f s; the server held %d sockets", n, ms / 1000, s
    printf " (idle-agents itself: %.1f KiB per agent)%s.\n", ir / n, (st >= 3 ? "" : "; RSS was still moving after 20 s")
}'
echo

finish
