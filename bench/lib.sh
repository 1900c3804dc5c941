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
