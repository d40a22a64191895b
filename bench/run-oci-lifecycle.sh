#!/usr/bin/env bash
# Runs the OCI lifecycle benchmark (bench/src/main.rs): create → start →
# wait → delete of /bin/true with bulkhead-oci, the bulkhead library, runc
# and crun, interleaved. Run as root; arguments go to oci-lifecycle (e.g.
# --iterations 50; BULKHEAD_OCI=path measures another bulkhead-oci). The
# results are recorded in docs/benchmarks.md.
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

trap unmount_hugetlb_v1 EXIT
mount_hugetlb_v1

echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:    $(nproc) cores, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit:  $commit"
echo "runc:    $(/usr/sbin/runc --version | head -n1)"
echo "crun:    $(/usr/bin/crun --version | head -n1)"
# BULKHEAD_OCI: another bulkhead-oci to measure (e.g. scripts/build-release's static one).
cmd=("$target/oci-lifecycle" --bulkhead-oci "${BULKHEAD_OCI:-$target/bulkhead-oci}" "$@")
echo "+ ${cmd[*]}"
"${cmd[@]}"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
