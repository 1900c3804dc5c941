#!/usr/bin/env bash
# Instructions per relayed webhook, per process: a figure that machine noise does not move.
#
# relay-server and relay-client run under valgrind's callgrind; bench-target runs natively.
# After WARMUP webhooks, both counters are zeroed, REQUESTS more 1 KB POSTs are sent one after
# another on one keep-alive connection (curl), and both counters are dumped. The figure is the
# instructions each process executed in that window divided by REQUESTS: user space only (the
# kernel's work in syscalls is not counted), every thread of the process.
#
#   bench/instructions.sh                         # SQLite store, fsync on: the defaults
#   STORE=memory bench/instructions.sh            # the store off
#   BODY=json bench/instructions.sh               # a JSON body with no type in a header, whose
#                                                 # type is looked for in the body
#   BODY=json TYPE_HEADER=push bench/instructions.sh   # ... with X-GitHub-Event: push
#
# About 40 s after the release build; see bench/README.md for the figures.
#
# Knobs (environment): REQUESTS (1000), WARMUP (100), STORE (sqlite | memory), BODY (x: 1,024
# bytes of `x`, the default; json: bench/run.sh's 1,024-byte JSON object), TYPE_HEADER (an
# X-GitHub-Event value sent with every webhook; unset: none), SKIP_BUILD
# (1 = use the binaries in target/release), KEEP_WORK (1 = keep the callgrind files, to read
# with callgrind_annotate), RUST_LOG (unset: each binary logs at its default level,
# relay-server info and relay-client warn, as users run them). Needs valgrind and curl
# (valgrind installed with apt-get when missing and running as root).
set -euo pipefail

REQUESTS=${REQUESTS:-1000}
WARMUP=${WARMUP:-100}
STORE=${STORE:-sqlite}
SKIP_BUILD=${SKIP_BUILD:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
source "$ROOT/bench/lib.sh"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release
WORK=$(mktemp -d)
PIDS=()

die() {
    echo "instructions.sh: $*" >&2
    exit 1
}

cleanup() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        kill -INT "${PIDS[i]}" 2>/dev/null || true
        wait "${PIDS[i]}" 2>/dev/null || true
    done
    if [[ ${KEEP_WORK:-0} == 1 ]]; then
        echo "callgrind files kept in $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

command -v curl >/dev/null || die "curl is required"
need_tool valgrind

if [[ $SKIP_BUILD != 1 ]]; then
    echo "building release binaries..." >&2
    (cd "$ROOT" && cargo build --release --quiet -p relay-server -p relay-client -p hookrelay-bench)
fi
for b in relay-server relay-client bench-target; do
    [[ -x $BIN/$b ]] || die "$BIN/$b is missing: build it or unset SKIP_BUILD"
done

# The target, natively.
"$BIN/bench-target" 0 >"$WORK/target.out" 2>"$WORK/target.err" &
PIDS+=($!)
wait_until 10 bench-target grep -q '^LISTENING ' "$WORK/target.out"
TPORT=$(awk '/^LISTENING/ {print $2}' "$WORK/target.out")

# Server and agent under callgrind. Each counter is zeroed and dumped by callgrind_control
# around the measured window; the start-up in front of it is not counted.
grind() {
    local name=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$WORK/$name.%p" "$@" \
        2>"$WORK/$name.valgrind" &
}

PORT=$(free_port)
store_args=(--data-dir "$WORK/data")
[[ $STORE == memory ]] && store_args+=(--store memory)
grind relay-server "$BIN/relay-server" --listen "127.0.0.1:$PORT" "${store_args[@]}"
SERVER_PID=$!
PIDS+=("$SERVER_PID")
wait_until 120 "relay-server under valgrind" curl -sf "http://127.0.0.1:$PORT/healthz"

grind relay-client "$BIN/relay-client" --server "http://127.0.0.1:$PORT" \
    --forward "http://127.0.0.1:$TPORT" --channel bench >"$WORK/relay-client.out"
CLIENT_PID=$!
PIDS+=("$CLIENT_PID")
agent_up() { curl -sf "http://127.0.0.1:$PORT/api/channels/bench" | grep -q '"agent_count":1'; }
wait_until 120 "relay-client under valgrind to connect" agent_up

case ${BODY:-x} in
x) head -c 1024 /dev/zero | tr '\0' 'x' >"$WORK/body" ;;
# bench/post1k.lua's body: {"pad":"aaa...a"}, 1,024 bytes.
json) { printf '{"pad":"'; head -c 1014 /dev/zero | tr '\0' 'a'; printf '"}'; } >"$WORK/body" ;;
*) die "BODY must be x or json" ;;
esac
type_header=()
[[ -n ${TYPE_HEADER:-} ]] && type_header=(-H "X-GitHub-Event: $TYPE_HEADER")
URL="http://127.0.0.1:$PORT/h/bench/hook"
# post N: N sequential POSTs of the 1 KB body on one keep-alive connection; fails on any
# answer that is not 2xx.
post() {
    local n=$1 urls=()
    for ((i = 0; i < n; i++)); do urls+=("$URL"); done
    curl -s --fail-early -f -H 'content-type: application/json' "${type_header[@]}" \
        --data-binary @"$WORK/body" "${urls[@]}" >/dev/null ||
        die "a relayed POST failed (relay-server log: $WORK/relay-server.valgrind; KEEP_WORK=1 keeps it)"
}

echo "warming up with $WARMUP webhooks..." >&2
post "$WARMUP"
callgrind_control --zero "$SERVER_PID" >/dev/null 2>&1
callgrind_control --zero "$CLIENT_PID" >/dev/null 2>&1
echo "measuring $REQUESTS webhooks..." >&2
post "$REQUESTS"
callgrind_control --dump "$SERVER_PID" >/dev/null 2>&1
callgrind_control --dump "$CLIENT_PID" >/dev/null 2>&1

# The dump after the zero is the only one with a part number so far: .PID.1
instructions() {
    local file=$1
    [[ -f $file ]] || die "no callgrind dump at $file"
    awk '/^(summary|totals):/ {print $2; exit}' "$file"
}
server_ir=$(instructions "$WORK/relay-server.$SERVER_PID.1")
client_ir=$(instructions "$WORK/relay-client.$CLIENT_PID.1")

commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
logs=${RUST_LOG:+RUST_LOG=$RUST_LOG}
typed=${TYPE_HEADER:+, X-GitHub-Event: $TYPE_HEADER}
echo "## Instructions per relayed webhook ($STORE store, $REQUESTS sequential 1 KB POSTs, ${BODY:-x} body$typed, logs ${logs:-at default levels}, commit $commit)"
echo
echo "| process | instructions per webhook |"
echo "|---|---:|"
awk -v s="$server_ir" -v c="$client_ir" -v n="$REQUESTS" 'BEGIN {
    printf "| relay-server | %.0f |\n| relay-client | %.0f |\n", s / n, c / n
}'
