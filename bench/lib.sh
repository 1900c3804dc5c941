# Shell helpers the bench scripts share; sourced, not run. Each script defines `die` first.

# need_tool COMMAND [PACKAGE]: makes sure COMMAND is on the PATH, installing Debian's PACKAGE
# (default: COMMAND) with apt-get when it is missing and we run as root; dies otherwise.
need_tool() {
    local tool=$1 package=${2:-$1}
    command -v "$tool" >/dev/null && return
    if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
        echo "installing $package with apt-get..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null; } ||
            die "apt-get could not install $package"
    else
        die "$tool is required: install it (Debian/Ubuntu: sudo apt-get install $package) and run again"
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
