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

# crun refuses to run while any cgroup controller sits on the v2 hierarchy
# of a hybrid host; the last one there is hugetlb. mount_hugetlb_v1 mounts a
# v1 hugetlb hierarchy (only when hugetlb is on v2), unmount_hugetlb_v1 undoes
# it, returning 1 if hugetlb does not come back to v2.
hugetlb=/sys/fs/cgroup/hugetlb
hugetlb_made_dir=
hugetlb_mounted=
hugetlb_on_v2() { grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; }
mount_hugetlb_v1() {
    if hugetlb_on_v2 && ! mountpoint -q "$hugetlb"; then
        [ -d "$hugetlb" ] || { mkdir -p "$hugetlb" && hugetlb_made_dir=1; }
        mount -t cgroup -o hugetlb cgroup "$hugetlb"
        hugetlb_mounted=1
        echo "mounted a cgroup v1 hugetlb hierarchy at $hugetlb (crun refuses hybrid cgroups); unmounted at exit"
    fi
}
unmount_hugetlb_v1() {
    [ -n "$hugetlb_mounted" ] || return 0
    local attempt
    for attempt in 1 2 3; do
        sleep 1 # the kernel releases the cgroups the runtimes just removed
        umount "$hugetlb"
        for _ in $(seq 10); do
            if hugetlb_on_v2; then
                [ -z "$hugetlb_made_dir" ] || rmdir "$hugetlb"
                hugetlb_mounted=
                echo "unmounted the cgroup v1 hugetlb hierarchy at $hugetlb; hugetlb is back on cgroup v2"
                return 0
            fi
            sleep 0.5
        done
        # Unmounted while a removed cgroup was still being released, the
        # hierarchy lingers, invisible, holding hugetlb (/proc/cgroups shows
        # it). Mounting it again finds it; then unmount again.
        echo "hugetlb did not return to cgroup v2 (attempt $attempt); mounting and unmounting again"
        mount -t cgroup -o hugetlb cgroup "$hugetlb"
    done
    echo "LEFT: hugetlb does not return to cgroup v2: left mounted at $hugetlb" >&2
    return 1
}

# The root file system here is ext4 without a journal, whose inode
# allocator crawls after large deletes (see /work/shared/PEERS.md): every
# contender's files go on one journaled ext4 of their own instead.
# make_journaled_fs IMAGE DIR makes a sparse 16 GiB image and mounts it at DIR.
make_journaled_fs() {
    truncate -s 16G "$1"
    mkfs.ext4 -q -F "$1" # with its default journal
    mkdir "$2"
    mount -o loop "$1" "$2"
}

# unmount_tree DIR [WORD]: unmounts what is below DIR (deepest first, each
# named on stderr after WORD) and then DIR itself; returns 1 if anything was
# below it.
unmount_tree() {
    local m="$1" word="${2:-warning: unmounting leftover}" below=0 p
    mountpoint -q "$m" || return 0
    if grep -q " $m/" /proc/self/mountinfo; then below=1; fi
    awk -v m="$m/" 'index($5, m) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r p; do
        echo "$word $p" >&2
        umount "$p" || umount -l "$p"
    done
    umount "$m" || { sleep 2; umount "$m"; } || umount -l "$m"
    return "$below"
}

# free_loop IMAGE: detaches the loop devices of IMAGE.
free_loop() {
    local p
    for p in $(losetup -j "$1" -O NAME -n 2>/dev/null); do losetup -d "$p"; done
}

# run_bench TMPDIR COMMAND...: prints and runs a bench program in a process
# group of its own (bench_pid names it, so a cleanup trap can stop whatever
# it started), with TMPDIR for the registry's temporary storage; then prints
# the load and exits with the program's status.
run_bench() {
    local tmp="$1" rc=0
    shift
    echo "+ $*"
    set -m
    TMPDIR="$tmp" "$@" &
    bench_pid=$!
    set +m
    wait "$bench_pid" || rc=$?
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    exit "$rc"
}

# stop_bench_group: for a cleanup trap, stops what run_bench's program left
# running in its process group (SIGTERM, then SIGKILL 3 s later).
stop_bench_group() {
    if [ -n "$bench_pid" ] && kill -0 -- "-$bench_pid" 2>/dev/null; then
        echo "stopping what the bench left running (process group $bench_pid)"
        kill -TERM -- "-$bench_pid"
        sleep 3
        kill -KILL -- "-$bench_pid" 2>/dev/null
        sleep 1
    fi
}

# The pod benchmarks (bench/src/pod_start.rs, bench/src/streaming.rs; their
# shared harness is bench/src/pods.rs): bulkhead and containerd's CRI plugin
# with runc and with crun, driven by one CRI client, interleaved.
#
# run_pod_bench NAME ARGS... installs what is missing, builds, and runs
# target/release/NAME with ARGS. Every contender's root, the pods' log
# directories and the registry's storage go on one journaled ext4 file
# system of their own (a sparse image under /var/tmp, loop-mounted for the
# run; see /work/shared/PEERS.md on the host's unjournaled root). Their state
# directories and sockets, which a node keeps under /run, go on a private
# tmpfs (/run is not a tmpfs on this VM, as it is on systemd hosts). On a
# hybrid cgroup host it mounts a v1 hugetlb hierarchy for the run (crun
# refuses hybrid cgroups while any controller is on the v2 hierarchy). At
# exit (pod_bench_cleanup) it stops whatever the bench left running, removes
# the two bridges and bulkhead's nftables table (neither daemon removes its
# bridge), unmounts, and checks that nothing is left: processes, mounts,
# loop device, veths, network namespaces, cgroups, nftables tables, iptables
# rules, and files the daemons or CNI made on the host. What an interrupted
# run leaves (the pods' processes and cgroups, the CNI masquerade rules, a
# killed shim's socket, go-cni's cache) is named, then removed.
listing() { [ ! -e "$1" ] || find "$1" -xdev 2>/dev/null | sort; }
pod_bench_cleanup() {
    local status=$? p left=0
    set +e
    stop_bench_group
    # Processes outside the group: pod monitors and shims detach from it.
    local strays
    strays="$(pgrep -f -- "$base" | tr '\n' ' ')"
    if [ -n "$strays" ]; then
        echo "LEFT: processes naming $base: $strays" >&2
        for p in $strays; do kill -KILL "$p" 2>/dev/null; done
        sleep 1
        left=1
    fi
    # The pods' own processes (pause, containers), which outlive a killed
    # shim or monitor: whatever is in the bench's cgroups (its "kubepods").
    local pods
    pods="$(find /sys/fs/cgroup/*/bhbench -name cgroup.procs -exec cat {} + 2>/dev/null | sort -un | tr '\n' ' ')"
    if [ -n "${pods// /}" ]; then
        echo "LEFT: processes in the pods' cgroups (killed): $pods" >&2
        for p in $pods; do kill -KILL "$p" 2>/dev/null; done
        sleep 1
        left=1
    fi
    for m in "$run" "$mnt"; do
        unmount_tree "$m" "LEFT: mount (unmounting)" || left=1
    done
    free_loop "$image"
    rm -rf "$base"
    # veths on the bridges, then the bridges and bulkhead's table (the run's own).
    for b in "${bridges[@]}"; do
        if [ -d "/sys/class/net/$b/brif" ] && [ -n "$(ls "/sys/class/net/$b/brif")" ]; then
            echo "LEFT: veths on $b: $(ls "/sys/class/net/$b/brif" | tr '\n' ' ')" >&2
            left=1
        fi
        ip link del "$b" 2>/dev/null
    done
    nft delete table inet bhbench0 2>/dev/null
    if nft list tables 2>/dev/null | grep -q bhbench; then echo "LEFT: nftables: $(nft list tables | grep bhbench)" >&2; left=1; fi
    if iptables-save 2>/dev/null | grep -Eq 'bhbench|10\.220\.'; then
        echo "LEFT: iptables rules for the containerd pods (removed):" >&2
        iptables-save | grep -E 'bhbench|10\.220\.' >&2
        left=1
        # The bridge plugin's ipMasq: a POSTROUTING rule per pod, to a chain of its own.
        local n c
        for n in $(iptables -t nat -L POSTROUTING -n --line-numbers | awk '/bhbenchc/ { print $1 }' | sort -rn); do
            iptables -t nat -D POSTROUTING "$n"
        done
        for c in $(iptables-save -t nat | awk '$1 == "-A" && $2 ~ /^CNI-/ && /bhbenchc/ { print $2 }' | sort -u); do
            iptables -t nat -F "$c" && iptables -t nat -X "$c"
        done
    fi
    if ip -o link | grep -q ': bhbench'; then echo "LEFT: links: $(ip -o link | grep ': bhbench' | cut -d: -f2 | tr '\n' ' ')" >&2; left=1; fi
    for p in /sys/fs/cgroup/*/bhbench; do
        if [ -e "$p" ]; then
            echo "LEFT: cgroup $p (removed)" >&2
            find "$p" -depth -type d -exec rmdir {} + 2>/dev/null || { sleep 1; find "$p" -depth -type d -exec rmdir {} +; }
            left=1
        fi
    done
    if [ -n "$bench_pid" ] && pgrep -g "$bench_pid" >/dev/null; then
        echo "LEFT: processes in group $bench_pid: $(pgrep -g "$bench_pid" | tr '\n' ' ')" >&2
        left=1
    fi
    if [ -n "$(losetup -j "$image" 2>/dev/null)" ]; then echo "LEFT: loop device on $image" >&2; left=1; fi
    if [ -e "$base" ]; then echo "LEFT: $base" >&2; left=1; fi
    # What the daemons and plugins made on the host. containerd's CNI library
    # (go-cni) caches results under /var/lib/cni whatever conf_dir says, and
    # removes the files on DEL: empty directories it made are removed here.
    for p in "${host_paths[@]}"; do
        local was now
        was="$before/$(echo "$p" | tr / _)"
        if [ ! -s "$was" ] && [ -d "$p" ] && [ -z "$(find "$p" -xdev ! -type d)" ]; then
            echo "note: $p was created during the run and holds only empty directories: removed"
            rm -r "$p"
        fi
        now="$(listing "$p")"
        if [ "$now" != "$(cat "$was")" ]; then
            echo "LEFT: under $p: $(diff <(cat "$was") <(echo "$now") | grep '^[<>]' | tr '\n' ' ')" >&2
            left=1
            # What the run made there goes: a directory it created, and the
            # sockets of the shims it killed (under /run/containerd/s).
            if [ ! -s "$was" ]; then
                rm -rf "$p"
            else
                comm -13 "$was" <(echo "$now") | while read -r f; do
                    case "$f" in /run/containerd/s/*) [ ! -S "$f" ] || rm -f "$f" ;; esac
                done
            fi
        fi
    done
    rm -rf "$before"
    unmount_hugetlb_v1 || left=1
    [ "$left" = 1 ] || echo "cleaned up: no process, mount, loop device, veth, bridge, network namespace, cgroup, nftables table, iptables rule or host file left"
    [ "$status" != 0 ] || [ "$left" = 0 ] || status=1
    exit "$status"
}

run_pod_bench() {
    local name="$1"
    shift
    # Globals, for pod_bench_cleanup: the bridges of the run, and the host
    # paths a daemon or CNI plugin might write to without its private paths
    # (their listings before the run, to compare after).
    bridges=(bhbench0 bhbenchc0)
    host_paths=(/run/containerd /var/lib/containerd /opt/containerd /var/lib/bulkhead /run/bulkhead /etc/cni
        /var/lib/cni /var/run/netns /etc/bulkhead)
    missing=()
    [ -x /usr/bin/containerd ] || missing+=(containerd)
    [ -x /usr/sbin/runc ] || missing+=(runc)
    [ -x /usr/bin/crun ] || missing+=(crun)
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    [ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
    dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
    command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
    command -v nft >/dev/null || missing+=(nftables)
    command -v iptables-save >/dev/null || missing+=(iptables)
    install_missing ${missing[@]+"${missing[@]}"}

    # The commit as built (someone may be editing the tree).
    commit="$(git rev-parse --short HEAD)$([ -z "$(git status --porcelain -- cri monitor runtime network image store confine proto spdy)" ] || echo ', with uncommitted changes')"
    # bulkhead starts bulkhead-monitor, and runs bulkhead-oci for exec, from beside its own binary.
    cargo build --release -p bulkhead-cri -p bulkhead-monitor -p bulkhead-runtime -p bulkhead-bench
    target="${CARGO_TARGET_DIR:-target}/release"

    for b in "${bridges[@]}"; do
        if ip link show "$b" >/dev/null 2>&1; then
            echo "$b exists already: a previous run left it (remove it first: ip link del $b)" >&2
            exit 1
        fi
    done
    before="$(mktemp -d "/var/tmp/bulkhead-$name-before.XXXXXX")"
    trap 'rm -rf "$before"' EXIT # until cleanup takes over
    for p in "${host_paths[@]}"; do listing "$p" >"$before/$(echo "$p" | tr / _)"; done

    base="$(mktemp -d "/var/tmp/bulkhead-$name.XXXXXX")"
    image="$base/fs.ext4"
    mnt="$base/mnt"
    run="$base/run"
    bench_pid=
    trap pod_bench_cleanup EXIT
    trap 'exit 130' INT TERM

    mount_hugetlb_v1

    make_journaled_fs "$image" "$mnt"
    mkdir "$run"
    mount -t tmpfs -o mode=0711,size=2g tmpfs "$run"
    echo "roots, pod logs, registry: $(findmnt -n -o SOURCE,FSTYPE,OPTIONS "$mnt") at $mnt (a journaled ext4 image on $(findmnt -n -o FSTYPE -T /var/tmp))"
    echo "state, sockets: tmpfs at $run"

    echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host:       $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "cgroups:    $(if [ -e /sys/fs/cgroup/cgroup.controllers ]; then echo v2; elif [ -d /sys/fs/cgroup/unified ]; then echo "hybrid (v1 controllers: $(cd /sys/fs/cgroup && ls -d */ | tr -d / | grep -v unified | tr '\n' ' ')cgroup2 at /sys/fs/cgroup/unified)"; else echo v1; fi)"
    echo "commit:     $commit"
    echo "containerd: $(/usr/bin/containerd --version)"
    echo "runc:       $(/usr/sbin/runc --version | head -n1); crun: $(/usr/bin/crun --version | head -n1)"
    echo "plugins:    containernetworking-plugins $(dpkg-query -W -f='${Version}' containernetworking-plugins); busybox-static $(dpkg-query -W -f='${Version}' busybox-static)"
    echo "registry:   $(/usr/bin/docker-registry --version 2>&1 | head -n1)"
    cmd=("$target/$name" --bulkhead "$target/bulkhead" --workdir "$mnt" --statedir "$run" "$@")
    # The registry's temporary storage goes on the same file system (TMPDIR).
    run_bench "$mnt" "${cmd[@]}"
}
