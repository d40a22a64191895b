# Shared by the bench/run-*.sh scripts (sourced, not run): the root check
# and the installation of the Debian packages a benchmark needs.

# Exits unless running as root, naming the calling script.
require_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "$(basename "$0"): run as root" >&2
        exit 1
    fi
}

# Installs the Debian packages named in the arguments, if any.
install_missing() {
    if [ $# -gt 0 ]; then
        echo "installing $*"
        apt-get update
        DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"
    fi
}
