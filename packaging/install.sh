#!/bin/sh
# bulkhead's node installer. Puts bulkhead onto a node as a systemd service:
# the three binaries (bulkhead starts bulkhead-monitor and bulkhead-oci from
# beside itself) in /usr/local/bin, the config in /etc/bulkhead/config.toml,
# the unit in /etc/systemd/system/bulkhead.service and, when given, registry
# credentials in /etc/bulkhead/auth.json; then has systemd (re)start the
# service and waits until the CRI socket answers.
#
# Idempotent: a file is written only when its content, mode or owner
# differs, to a temporary file in the same directory that is fsynced and
# renamed over the old one (so the node never sees a torn file); the service
# is restarted only when something it runs changed. A second run changes
# nothing (same mtimes) and says "result: unchanged".
#
# The same script is the Helm chart's installer (packaging/Containerfile;
# charts/bulkhead) and is tested against a temporary directory standing in
# for the node's root (scripts/test-charts): with --root other than /, the
# systemctl steps are skipped unless --systemd says otherwise.
#
# Usage: install.sh [OPTIONS]            install or update
#        install.sh --remove [OPTIONS]   stop, disable and remove the service
#        install.sh --probe SOCKET       does SOCKET answer as an HTTP/2 (gRPC) server? (exit 0/1)
set -eu

PROG=bulkhead-install

usage() {
  cat <<'EOF'
Usage: install.sh [OPTIONS]            install or update bulkhead on a node
       install.sh --remove [OPTIONS]   stop, disable and remove it
       install.sh --probe SOCKET       exit 0 when SOCKET answers as an HTTP/2 (gRPC) server

Options (each also as --opt=value):
  --source DIR        the binaries and bulkhead.service (default: this script's directory)
  --config FILE       the config to install as /etc/bulkhead/config.toml (required to install)
  --unit FILE         the systemd unit (default: SOURCE/bulkhead.service)
  --auth FILE         registry credentials (a .dockerconfigjson) to install as /etc/bulkhead/auth.json, mode 0600
  --no-auth           remove /etc/bulkhead/auth.json if present (default: leave it alone)
  --root DIR          the node's root directory to write into (default: /)
  --host-root DIR     where the node's root is seen for the socket probe and the
                      remove checks (default: ROOT; the chart uses /proc/1/root)
  --proc DIR          the node's /proc for the remove checks (default: /proc)
  --socket PATH       the CRI socket as the node sees it (default: `socket` in the config, else
                      /run/bulkhead/bulkhead.sock)
  --systemd MODE      host: run systemctl; nsenter: run it in PID 1's namespaces (from a
                      hostPID container); none: skip; auto (default): host when ROOT is /, else none.
                      $BULKHEAD_SYSTEMCTL, when set, replaces the systemctl command (tests).
  --nsenter-target P  the process whose namespaces nsenter enters (default: 1; tests)
  --wait SECONDS      how long to wait for the socket to answer after systemd (default: 60)
  --expect-version V  refuse unless SOURCE/bulkhead --version reports V
  --status-file FILE  write "installed <version>" or "removed" there when done
  --force             --remove even while kubelet or pods still use bulkhead
  --stay              when done, sleep until SIGTERM (the chart's DaemonSet pod stays as the
                      node's record of the installed version)
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

# --- the socket probe --------------------------------------------------------

# Exit 0 when $1 accepts a connection and answers the HTTP/2 client preface
# with a SETTINGS frame, as every HTTP/2 server (tonic, which serves the CRI)
# must. perl-base is Essential in Debian, so it is on every Debian host and
# in debian:12-slim; without perl only the socket's existence is checked.
probe() {
  [ -S "$1" ] || return 1
  if ! command -v perl >/dev/null 2>&1; then
    say "perl is missing: only checked that $1 is a socket"
    return 0
  fi
  perl -e '
    use strict; use IO::Socket::UNIX; use Socket;
    $SIG{ALRM} = sub { exit 3 };
    alarm 5;
    my $s = IO::Socket::UNIX->new(Type => SOCK_STREAM(), Peer => $ARGV[0]) or exit 2;
    $s->autoflush(1);
    # Client preface, then an empty SETTINGS frame (length 0, type 4, flags 0, stream 0).
    print $s "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", pack("C9", 0, 0, 0, 4, 0, 0, 0, 0, 0);
    my $header = "";
    while (length($header) < 9) {
      my $n = sysread($s, $header, 9 - length($header), length($header));
      exit 4 unless $n;
    }
    exit(((unpack("C9", $header))[3] == 4) ? 0 : 5);
  ' "$1"
}

# --- arguments ---------------------------------------------------------------

ACTION=install
SOURCE=
CONFIG=
UNIT=
AUTH=
NO_AUTH=0
ROOT=/
HOST_ROOT=
PROC=/proc
SOCKET=
SYSTEMD=auto
TARGET=1
WAIT=60
EXPECT_VERSION=
STATUS_FILE=
FORCE=0
STAY=0

while [ $# -gt 0 ]; do
  opt=$1
  case $opt in
    --*=*) val=${opt#*=}; opt=${opt%%=*}; has_val=1 ;;
    *) val=; has_val=0 ;;
  esac
  case $opt in
    --source|--config|--unit|--auth|--root|--host-root|--proc|--socket|--systemd|--nsenter-target|--wait|--expect-version|--status-file|--probe)
      if [ "$has_val" = 0 ]; then
        [ $# -ge 2 ] || die "$opt needs a value"
        val=$2
        shift
      fi
      ;;
    --no-auth|--remove|--force|--stay|-h|--help)
      [ "$has_val" = 0 ] || die "$opt takes no value"
      ;;
    *) die "unknown argument $opt (see --help)" ;;
  esac
  shift
  case $opt in
    --source) SOURCE=$val ;;
    --config) CONFIG=$val ;;
    --unit) UNIT=$val ;;
    --auth) AUTH=$val ;;
    --no-auth) NO_AUTH=1 ;;
    --root) ROOT=$val ;;
    --host-root) HOST_ROOT=$val ;;
    --proc) PROC=$val ;;
    --socket) SOCKET=$val ;;
    --systemd) SYSTEMD=$val ;;
    --nsenter-target) TARGET=$val ;;
    --wait) WAIT=$val ;;
    --expect-version) EXPECT_VERSION=$val ;;
    --status-file) STATUS_FILE=$val ;;
    --remove) ACTION=remove ;;
    --force) FORCE=1 ;;
    --stay) STAY=1 ;;
    --probe)
      if probe "$val"; then exit 0; else exit 1; fi
      ;;
    -h|--help) usage; exit 0 ;;
  esac
done

case $ROOT in /*) ;; *) die "--root must be an absolute path: $ROOT" ;; esac
# The root without its trailing slash, so "$R/etc" is /etc for the root /.
R=${ROOT%/}
while [ "$R" != "${R%/}" ]; do R=${R%/}; done
HOST_ROOT=${HOST_ROOT:-$ROOT}
H=${HOST_ROOT%/}
[ -n "$SOURCE" ] || SOURCE=$(cd "$(dirname "$0")" && pwd)
[ -n "$UNIT" ] || UNIT=$SOURCE/bulkhead.service
case $WAIT in ''|*[!0-9]*) die "--wait must be a number of seconds: $WAIT" ;; esac
case $TARGET in ''|*[!0-9]*) die "--nsenter-target must be a pid: $TARGET" ;; esac
NSENTER="nsenter --target $TARGET"
[ -z "$AUTH" ] || [ "$NO_AUTH" = 0 ] || die "--auth and --no-auth exclude each other"

if [ "$SYSTEMD" = auto ]; then
  if [ -z "$R" ]; then SYSTEMD=host; else SYSTEMD=none; fi
fi
case $SYSTEMD in
  host) SYSTEMCTL=${BULKHEAD_SYSTEMCTL:-systemctl} ;;
  nsenter) SYSTEMCTL=${BULKHEAD_SYSTEMCTL:-$NSENTER --mount --uts --ipc --net --pid -- systemctl} ;;
  none) SYSTEMCTL= ;;
  *) die "--systemd must be auto, host, nsenter or none: $SYSTEMD" ;;
esac

BIN_DIR=$R/usr/local/bin
ETC_DIR=$R/etc/bulkhead
UNIT_DIR=$R/etc/systemd/system
BINARIES="bulkhead bulkhead-monitor bulkhead-oci"
SERVICE=bulkhead.service

# A top-level `key = "value"` of a TOML file (before its first table).
toml_top_string() {
  awk -v key="$2" '
    /^[[:space:]]*\[/ { exit }
    $0 ~ "^[[:space:]]*" key "[[:space:]]*=" {
      sub(/^[^=]*=[[:space:]]*"/, ""); sub(/"[[:space:]]*(#.*)?$/, ""); print; exit
    }' "$1"
}

systemctl_() {
  # shellcheck disable=SC2086 # SYSTEMCTL is a command and its arguments
  $SYSTEMCTL "$@"
}

# --- writing files -----------------------------------------------------------

TMP=
cleanup() { [ -z "$TMP" ] || rm -f "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

IS_ROOT=0
[ "$(id -u)" != 0 ] || IS_ROOT=1
CHANGED=
RESTART=0
RELOAD=0

# ensure_dir DIR: create DIR (and its parents) with mode 0755 when missing;
# an existing directory is left as it is.
ensure_dir() {
  [ -d "$1" ] && return 0
  [ ! -e "$1" ] || die "$1 exists and is not a directory"
  ensure_dir "$(dirname "$1")"
  mkdir -m 0755 "$1"
  rel=${1#"$R"}
  say "${rel:-$1}/: created"
}

# install_file SRC DEST MODE WHAT: DEST becomes a copy of SRC with MODE,
# owned by root, unless it already is. WHAT is "restart" (the service must
# restart to use it), "reload" (the unit: daemon-reload and restart) or "data".
install_file() {
  src=$1 dest=$2 mode=$3 what=$4
  [ -f "$src" ] || die "$src is missing"
  [ ! -d "$dest" ] || die "$dest is a directory"
  dir=$(dirname "$dest")
  ensure_dir "$dir"
  # Temporary files a killed run left behind.
  rm -f "$dir/.${dest##*/}.bulkhead-install."*
  if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$src" "$dest" &&
    [ "$(stat -c %a "$dest")" = "${mode#0}" ] &&
    { [ "$IS_ROOT" = 0 ] || [ "$(stat -c %u:%g "$dest")" = 0:0 ]; }; then
    say "${dest#"$R"}: unchanged"
    return 0
  fi
  verb=updated
  [ -e "$dest" ] || [ -L "$dest" ] || verb=installed
  TMP=$dir/.${dest##*/}.bulkhead-install.$$
  # Created empty with MODE first, so the content is never readable more widely.
  rm -f "$TMP"
  (umask 077 && : >"$TMP")
  chmod "$mode" "$TMP"
  [ "$IS_ROOT" = 0 ] || chown 0:0 "$TMP"
  cat "$src" >"$TMP"
  sync "$TMP"
  mv -f "$TMP" "$dest"
  TMP=
  sync "$dir"
  say "${dest#"$R"}: $verb (mode $mode)"
  CHANGED="$CHANGED ${dest#"$R"}"
  case $what in
    restart) RESTART=1 ;;
    reload) RESTART=1; RELOAD=1 ;;
  esac
}

# remove_file DEST: remove DEST if present.
remove_file() {
  if [ -e "$1" ] || [ -L "$1" ]; then
    rm -f "$1"
    sync "$(dirname "$1")"
    say "${1#"$R"}: removed"
    CHANGED="$CHANGED ${1#"$R"}"
  fi
}

write_status() {
  [ -z "$STATUS_FILE" ] && return 0
  mkdir -p "$(dirname "$STATUS_FILE")"
  printf '%s\n' "$1" >"$STATUS_FILE.tmp"
  mv -f "$STATUS_FILE.tmp" "$STATUS_FILE"
}

stay() {
  [ "$STAY" = 1 ] || return 0
  say "done; staying until stopped"
  sleeper=
  trap '[ -z "$sleeper" ] || kill "$sleeper" 2>/dev/null; exit 0' TERM INT
  while :; do
    sleep 86400 &
    sleeper=$!
    wait "$sleeper" || true
  done
}

# service_failed MESSAGE: show the service's state and last log lines, then die.
service_failed() {
  say "$1; the service's state and last log lines:"
  systemctl_ --no-pager status "$SERVICE" >&2 || true
  if [ -z "${BULKHEAD_SYSTEMCTL:-}" ]; then
    case $SYSTEMD in
      nsenter) $NSENTER --mount --uts --ipc --net --pid -- journalctl -u "$SERVICE" -n 40 --no-pager >&2 || true ;;
      host) journalctl -u "$SERVICE" -n 40 --no-pager >&2 || true ;;
    esac
  fi
  die "$1"
}

wait_for_socket() {
  path=$H$SOCKET
  say "waiting up to ${WAIT}s for $SOCKET to answer"
  elapsed=0
  while ! probe "$path"; do
    [ "$elapsed" -lt "$WAIT" ] || service_failed "$SOCKET does not answer (waited ${WAIT}s)"
    sleep 1
    elapsed=$((elapsed + 1))
  done
  say "$SOCKET answers"
}

# --- install -----------------------------------------------------------------

do_install() {
  [ -n "$CONFIG" ] || die "--config FILE is required to install"
  [ -f "$CONFIG" ] || die "config $CONFIG is missing"
  for b in $BINARIES; do
    [ -f "$SOURCE/$b" ] || die "$SOURCE/$b is missing"
    [ -x "$SOURCE/$b" ] || die "$SOURCE/$b is not executable"
  done
  [ -f "$UNIT" ] || die "unit $UNIT is missing"
  [ -z "$AUTH" ] || [ -f "$AUTH" ] || die "credentials $AUTH are missing"

  # Before anything changes: the binaries must run on the node (its libc and
  # libseccomp; from a container, in PID 1's mount namespace, reaching our
  # files through /proc/<our pid>/root) and agree on one version; and the
  # config must be one this bulkhead accepts.
  version=$("$SOURCE/bulkhead" --version) || die "$SOURCE/bulkhead --version failed"
  version=${version#bulkhead }
  if [ -n "$EXPECT_VERSION" ] && [ "$version" != "$EXPECT_VERSION" ]; then
    die "$SOURCE/bulkhead is version $version, not the expected $EXPECT_VERSION (installer image and chart version disagree)"
  fi
  for b in $BINARIES; do
    if [ "$SYSTEMD" = nsenter ]; then
      out=$($NSENTER --mount -- "/proc/$$/root$SOURCE/$b" --version 2>&1) ||
        die "$b does not run on this node (its C library or libseccomp?): $out"
    else
      out=$("$SOURCE/$b" --version 2>&1) || die "$b does not run here: $out"
    fi
    [ "$out" = "$b $version" ] || die "$SOURCE/$b reports \"$out\", not \"$b $version\""
  done
  "$SOURCE/bulkhead" config check "$CONFIG" >/dev/null || die "the config is refused by bulkhead $version (above); nothing was changed"
  [ -n "$SOCKET" ] || SOCKET=$(toml_top_string "$CONFIG" socket)
  [ -n "$SOCKET" ] || SOCKET=/run/bulkhead/bulkhead.sock

  say "installing bulkhead $version into $ROOT"
  for b in $BINARIES; do
    install_file "$SOURCE/$b" "$BIN_DIR/$b" 0755 restart
  done
  install_file "$CONFIG" "$ETC_DIR/config.toml" 0644 restart
  install_file "$UNIT" "$UNIT_DIR/$SERVICE" 0644 reload
  # bulkhead reads auth.json (image.auth_file) at each pull: no restart for it.
  if [ -n "$AUTH" ]; then
    install_file "$AUTH" "$ETC_DIR/auth.json" 0600 data
  elif [ "$NO_AUTH" = 1 ]; then
    remove_file "$ETC_DIR/auth.json"
  fi

  if [ -z "$SYSTEMCTL" ]; then
    say "systemd: skipped (--systemd none)"
  else
    if [ "$RELOAD" = 1 ]; then
      say "systemd: daemon-reload"
      systemctl_ daemon-reload
    fi
    if ! systemctl_ --quiet is-enabled "$SERVICE" >/dev/null 2>&1; then
      say "systemd: enable $SERVICE"
      systemctl_ --quiet enable "$SERVICE"
    fi
    if [ "$RESTART" = 1 ]; then
      say "systemd: restart $SERVICE (pods keep running: KillMode=process)"
      systemctl_ restart "$SERVICE" || service_failed "systemctl restart $SERVICE failed"
    elif ! systemctl_ --quiet is-active "$SERVICE" >/dev/null 2>&1; then
      say "systemd: start $SERVICE (it was not running)"
      systemctl_ start "$SERVICE" || service_failed "systemctl start $SERVICE failed"
    else
      say "systemd: $SERVICE is running; nothing to restart"
    fi
    wait_for_socket
  fi

  if [ -n "$CHANGED" ]; then
    say "result: changed:$CHANGED"
  else
    say "result: unchanged"
  fi
  write_status "installed $version"
}

# --- remove ------------------------------------------------------------------

# Prints why bulkhead is still in use on the node, if it is: a kubelet whose
# command line or config file names the socket, or pods bulkhead still holds.
in_use() {
  for d in "$PROC"/[0-9]*; do
    [ "$(cat "$d/comm" 2>/dev/null)" = kubelet ] || continue
    args=$(tr '\0' '\n' <"$d/cmdline" 2>/dev/null) || continue
    if printf '%s\n' "$args" | grep -qF -- "$SOCKET"; then
      echo "kubelet (pid ${d##*/}) has $SOCKET on its command line"
      return 0
    fi
    files=$(printf '%s\n' "$args" | awk '
      want { print; want = 0; next }
      /^--config(-dir)?$/ { want = 1; next }
      /^--config(-dir)?=/ { sub(/^--config(-dir)?=/, ""); print }')
    for f in $files; do
      case $f in /*) p=$d/root$f ;; *) p=$d/cwd/$f ;; esac
      if [ -d "$p" ]; then
        found=$(grep -rlF -- "$SOCKET" "$p" 2>/dev/null | head -n 1) || true
      else
        found=$(grep -lF -- "$SOCKET" "$p" 2>/dev/null) || true
      fi
      if [ -n "$found" ]; then
        echo "kubelet (pid ${d##*/}) reads $f, which names $SOCKET"
        return 0
      fi
    done
  done
  pods=$H$STATE/pods
  if [ -d "$pods" ] && [ -n "$(ls -A "$pods" 2>/dev/null)" ]; then
    echo "bulkhead still holds $(find "$pods" -mindepth 1 -maxdepth 1 | wc -l) pod(s) in $STATE/pods"
    return 0
  fi
  return 1
}

do_remove() {
  installed=$ETC_DIR/config.toml
  [ -n "$CONFIG" ] || CONFIG=$installed
  STATE=
  if [ -f "$CONFIG" ]; then
    [ -n "$SOCKET" ] || SOCKET=$(toml_top_string "$CONFIG" socket)
    STATE=$(toml_top_string "$CONFIG" state)
  fi
  [ -n "$SOCKET" ] || SOCKET=/run/bulkhead/bulkhead.sock
  [ -n "$STATE" ] || STATE=/run/bulkhead
  if why=$(in_use); then
    if [ "$FORCE" = 1 ]; then
      say "removing although $why (--force)"
    else
      die "refusing to remove bulkhead: $why. Point kubelet back at the previous runtime and remove bulkhead's pods (crictl --runtime-endpoint unix://$SOCKET rmp -fa) first, or pass --force"
    fi
  fi
  say "removing bulkhead from $ROOT"
  if [ -n "$SYSTEMCTL" ]; then
    if [ -e "$UNIT_DIR/$SERVICE" ]; then
      say "systemd: disable --now $SERVICE"
      systemctl_ --quiet disable --now "$SERVICE" || true
    fi
  else
    say "systemd: skipped (--systemd none)"
  fi
  remove_file "$UNIT_DIR/$SERVICE"
  if [ -n "$SYSTEMCTL" ] && [ -n "$CHANGED" ]; then
    systemctl_ daemon-reload
  fi
  for b in $BINARIES; do
    remove_file "$BIN_DIR/$b"
  done
  remove_file "$ETC_DIR/config.toml"
  remove_file "$ETC_DIR/auth.json"
  if [ -d "$ETC_DIR" ] && rmdir "$ETC_DIR" 2>/dev/null; then
    say "/etc/bulkhead/: removed"
  fi
  if [ -n "$CHANGED" ]; then
    say "result: changed:$CHANGED"
  else
    say "result: unchanged"
  fi
  say "left in place: the durable state (root in config.toml, /var/lib/bulkhead by default); remove it by hand when no longer wanted"
  write_status removed
}

# A status file left by an earlier run says nothing about this one.
[ -z "$STATUS_FILE" ] || rm -f "$STATUS_FILE"
case $ACTION in
  install) do_install ;;
  remove) do_remove ;;
esac
stay
