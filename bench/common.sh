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

