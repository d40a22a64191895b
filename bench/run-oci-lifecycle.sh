#!/usr/bin/env bash
# Runs the OCI lifecycle benchmark (bench/src/main.rs): create → start →
# wait → delete of /bin/true with bulkhead-oci, the bulkhead library, runc
# and crun, interleaved. Run as root; arguments go to oci-lifecycle (e.g.
# --iterations 50). The results are recorded in docs/benchmarks.md.
#
# It installs runc, crun and busybox-static with apt-get if they are missing,
# and on a hybrid cgroup host mounts a v1 hugetlb hierarchy at
# /sys/fs/cgroup/hugetlb (crun refuses to run while any controller is on the
# v2 hierarchy), which it unmounts again at exit, checking that hugetlb is
# back on cgroup v2.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
require_root

missing=()
[ -x /usr/sbin/runc ] || missing+=(runc)
[ -x /usr/bin/crun ] || missing+=(crun)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || missing+=(busybox-static)
install_missing ${missing[@]+"${missing[@]}"}

# The commit of the runtime as built (someone may be editing the tree).
commit="$(git rev-parse --short HEAD)$([ -z "$(git status --porcelain -- runtime)" ] || echo ', with uncommitted changes in runtime/')"
cargo build --release -p bulkhead-runtime -p bulkhead-bench
target="${CARGO_TARGET_DIR:-target}/release"

hugetlb=/sys/fs/cgroup/hugetlb
made_dir=
mounted=
on_v2() { grep -qw hugetlb /sys/fs/cgroup/unified/cgroup.controllers 2>/dev/null; }
unmount_hugetlb() {
    [ -n "$mounted" ] || return 0
    local attempt
    for attempt in 1 2 3; do
        sleep 1 # the kernel releases the cgroups the runtimes just removed
        umount "$hugetlb"
        for _ in $(seq 10); do
            if on_v2; then
                [ -z "$made_dir" ] || rmdir "$hugetlb"
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
    echo "warning: hugetlb does not return to cgroup v2: left mounted at $hugetlb" >&2
}
if on_v2 && ! mountpoint -q "$hugetlb"; then
    [ -d "$hugetlb" ] || { mkdir -p "$hugetlb" && made_dir=1; }
    mount -t cgroup -o hugetlb cgroup "$hugetlb"
    mounted=1
    trap unmount_hugetlb EXIT
    echo "mounted a cgroup v1 hugetlb hierarchy at $hugetlb (crun refuses hybrid cgroups); unmounted at exit"
fi

echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:    $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit:  $commit"
echo "runc:    $(/usr/sbin/runc --version | head -n1)"
echo "crun:    $(/usr/bin/crun --version | head -n1)"
cmd=("$target/oci-lifecycle" --bulkhead-oci "$target/bulkhead-oci" "$@")
echo "+ ${cmd[*]}"
"${cmd[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
