# shellcheck shell=bash
# Shell helpers the bench scripts share; sourced, not run. Each script defines `die` first.

# need_tool COMMAND [PACKAGE]: makes sure COMMAND is on the PATH, installing Debian's PACKAGE
# (default: COMMAND) when it is missing (apt_install).
need_tool() {
    command -v "$1" >/dev/null || apt_install "${2:-$1}" "$1"
}

# apt_install PACKAGE WHAT: installs Debian's PACKAGE with apt-get when we run as root; dies,
# saying WHAT is required, otherwise.
apt_install() {
    local package=$1 what=$2
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing $package with apt-get..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; } ||
            die "apt-get could not install $package"
    else
        die "$what is required: install it (Debian/Ubuntu: sudo apt-get install $package) and run again"
    fi
}

now_ms() { date +%s%3N; }

# wait_until SECONDS DESCRIPTION COMMAND...: polls COMMAND every 50 ms until it succeeds;
# fails the run after SECONDS.
wait_until() {
    local limit=$1 what=$2
    shift 2
    local deadline=$(($(now_ms) + limit * 1000))
    until "$@" >/dev/null; do
        (($(now_ms) < deadline)) || die "timed out after ${limit}s waiting for $what (logs: KEEP_WORK=1)"
        sleep 0.05
    done
}

# free_port: a TCP port on 127.0.0.1 that nothing listens on now.
free_port() {
    if command -v python3 >/dev/null; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        local p
        while :; do
            p=$((20000 + RANDOM % 12000))
            port_free "$p" && echo "$p" && return
        done
    fi
}

port_free() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }
port_listening() { ! port_free "$1"; }

# The rest expects the sourcing script to set ROOT (the checkout), BIN (the release binaries),
# WORK (its temp dir), LUA (wrk's default script), WARMUP (seconds) and PIDS=() (every process
# it starts).

# build BINARY...: builds the release binaries (unless SKIP_BUILD=1), then checks that each
# BINARY is in $BIN.
build() {
    local b
    if [[ ${SKIP_BUILD:-0} != 1 ]]; then
        echo "building release binaries..." >&2
        (cd "$ROOT" && cargo build --release --quiet -p relay-server -p relay-client -p hookrelay-bench)
    fi
    for b in "$@"; do
        [[ -x $BIN/$b ]] || die "$BIN/$b missing; run without SKIP_BUILD=1"
    done
}

# print_header TITLE [SOFTWARE]: the report's title and its machine, software (SOFTWARE added
# before hookrelay's revision) and logs lines.
print_header() {
    local title=$1 software=${2:+$2, } cpu_model mem_total rev logs
    cpu_model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    mem_total=$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
    rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || rev="$rev (with uncommitted changes)"
    echo "# $title"
    echo
    echo "- machine: $(nproc) CPUs, ${cpu_model:-unknown CPU}, $mem_total RAM, $(uname -sr)"
    echo "- software: $(rustc --version 2>/dev/null || echo 'rustc ?'), $(wrk -v 2>&1 | head -1 | awk '{print $1, $2}'), ${software}hookrelay $rev"
    logs=${RUST_LOG:+RUST_LOG=$RUST_LOG}
    echo "- logs: ${logs:-each binary at its default level (relay-server info, relay-client warn)}, relay-server's to a file"
}


# stop PID: SIGTERM to one process we started, then SIGKILL if it is still there after 5 s.
stop() {
    local pid=$1 i
    kill "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# stop_all: stops everything in PIDS, newest first (agents before the server they talk to).
stop_all() {
    local i
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do stop "${PIDS[i]}"; done
    PIDS=()
}

# alive PID NAME LOG: fails the run, with LOG's tail, when PID has exited.
alive() { kill -0 "$1" 2>/dev/null || die "$2 exited early; its log: $(tail -5 "$3" 2>/dev/null)"; }

# cpu_ticks PID: CPU time (user + system) of a process so far, in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# start_server NAME SERVER_ARGS...: relay-server on a free port with SERVER_ARGS; waits for
# /healthz. Sets RELAY_PORT and RELAY_SERVER_PID; its log goes to $WORK/NAME-server.err.
start_server() {
    local name=$1
    shift
    RELAY_PORT=$(free_port)
    # Defaults: no delivery pace, so the flood of one channel is delivered live.
    "$BIN/relay-server" --listen "127.0.0.1:$RELAY_PORT" "$@" 2>"$WORK/$name-server.err" >/dev/null &
    RELAY_SERVER_PID=$!
    PIDS+=("$RELAY_SERVER_PID")
    wait_until 10 "relay-server ($name) /healthz" curl -sf "http://127.0.0.1:$RELAY_PORT/healthz"
}

# start_agent NAME PORT: relay-client serving channel bench for the target on $TPORT, connected
# to the relay-server on PORT; waits until that server counts it. Sets RELAY_CLIENT_PID; logs
# go to $WORK/NAME-client.{out,err}.
start_agent() {
    local name=$1 port=$2
    "$BIN/relay-client" --server "http://127.0.0.1:$port" --forward "http://127.0.0.1:$TPORT" \
        --channel bench >"$WORK/$name-client.out" 2>"$WORK/$name-client.err" &
    RELAY_CLIENT_PID=$!
    PIDS+=("$RELAY_CLIENT_PID")
    wait_until 15 "relay-client ($name) to connect (channel bench)" agent_up "$port"
    wait_until 5 "relay-client's ($name) Forwarding line" grep -q '^Forwarding ' "$WORK/$name-client.out"
}
agent_up() { curl -sf "http://127.0.0.1:$1/api/channels/bench" | grep -q '"agent_count":1'; }

# start_relay NAME SERVER_ARGS...: start_server, then start_agent on it.
start_relay() {
    start_server "$@"
    start_agent "$1" "$RELAY_PORT"
}

# run_wrk NAME URL THREADS CONNS SECONDS [SCRIPT]: warm up, measure with SCRIPT (default
# $LUA), and print "rps p50_ms p99_ms requests non2xx socket_errors". wrk's output stays in
# $WORK/wrk-NAME.txt.
run_wrk() {
    local name=$1 url=$2 t=$3 c=$4 d=$5 script=${6:-$LUA} out=$WORK/wrk-$1.txt
    if ((WARMUP > 0)); then
        wrk -t"$t" -c"$c" -d"${WARMUP}s" -s "$script" "$url" >/dev/null 2>&1 || true
    fi
    wrk -t"$t" -c"$c" -d"${d}s" --latency -s "$script" "$url" >"$out" 2>&1 ||
        die "wrk failed against $url: $(tail -3 "$out")"
    awk '
        function ms(v) {
            if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
            if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
            if (v ~ /m$/) return substr(v, 1, length(v) - 1) * 60000
            if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
            return v + 0
        }
        /Requests\/sec:/ { rps = $2 }
        /^ *50%/ { p50 = ms($2) }
        /^ *99%/ { p99 = ms($2) }
        / requests in / { n = $1 }
        /Non-2xx or 3xx responses:/ { bad = $NF }
        /Socket errors:/ { gsub(/[^0-9 ]/, " "); for (i = 1; i <= NF; i++) err += $i }
        END { printf "%s %s %s %s %d %d\n", rps, p50, p99, n, bad, err }
    ' "$out"
}

# awk functions for the tables, to put in front of an awk program: lat(ms) as "0.25 ms" or
# "12.8 ms", grp(n) as "12,345".
# shellcheck disable=SC2034 # used by the scripts that source this file
AWK_FORMAT='
    function lat(v) { return v < 10 ? sprintf("%.2f ms", v) : sprintf("%.1f ms", v) }
    function grp(n,   s, out) {
        s = sprintf("%d", n + 0.5)
        while (length(s) > 3) { out = "," substr(s, length(s) - 2) out; s = substr(s, 1, length(s) - 3) }
        return s out
    }
'

# note TEXT: a line for the Notes section finish prints.
NOTES=()
note() { NOTES+=("$*"); }

# finish: prints the notes, and fails the run when measure (or the script) set REFUSED: a run
# in which a request was refused or failed measured something else than relaying, so its
# figures are printed but it does not pass.
finish() {
    local n
    if ((${#NOTES[@]})); then
        echo "## Notes"
        echo
        for n in "${NOTES[@]}"; do echo "- $n"; done
        echo
    fi
    ((REFUSED == 0)) || die "some requests got an unexpected answer or a socket error (see Notes)"
}

# measure KEY NAME URL THREADS CONNS SECONDS [SCRIPT]: run_wrk, with its figures kept in
# RPS[KEY], P50[KEY], P99[KEY], REQS[KEY], BAD[KEY] and ERRS[KEY]. Any non-2xx answer (wrk
# counts 4xx and 5xx) or socket error is noted and sets REFUSED=1, so that the script can fail
# after printing its figures. Then calls check_alive, which the script defines.
# shellcheck disable=SC2034 # read by the scripts that source this file
declare -A RPS P50 P99 REQS BAD ERRS
REFUSED=0
measure() {
    local key=$1 r
    r=$(run_wrk "$key" "$3" "$4" "$5" "$6" "${7:-}")
    read -r "RPS[$key]" "P50[$key]" "P99[$key]" "REQS[$key]" "BAD[$key]" "ERRS[$key]" <<<"$r"
    if ((BAD[$key] > 0 || ERRS[$key] > 0)); then
        note "$2 ($key): ${BAD[$key]} non-2xx responses and ${ERRS[$key]} socket errors out of ${REQS[$key]} requests."
        # shellcheck disable=SC2034 # read by the scripts that source this file
        REFUSED=1
    fi
    check_alive
}
