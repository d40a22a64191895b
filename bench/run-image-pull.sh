#!/usr/bin/env bash
# Runs the image-pull benchmark (bench/src/image_pull.rs): pull and unpack
# of one ~300 MB, 6-layer gzip image from a docker-registry on 127.0.0.1,
# with bulkhead and with containerd's CRI plugin (each started by the bench
# on a fresh root every round, driven by the same CRI client), against the
# floor (curl | tar -xz, 3 layers at a time), interleaved. Run as root;
# arguments go to image-pull (e.g. --rounds 3). The results are recorded in
# docs/benchmarks.md.
#
# The root file system here is ext4 without a journal, whose inode allocator
# makes file creation crawl after large deletes (see /work/shared/PEERS.md),
# so every contender's root and the registry's storage go on one journaled
# ext4 file system of their own: a sparse image file under /var/tmp,
# loop-mounted for the run. At exit the script stops whatever the bench
# left running (its process group), unmounts, frees the loop device, removes
# the image and checks that nothing is left, and that neither daemon created
# its default directories on the host.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
require_root

missing=()
[ -x /usr/bin/containerd ] || missing+=(containerd)
[ -x /usr/bin/docker-registry ] || missing+=(docker-registry)
command -v curl >/dev/null || missing+=(curl)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
install_missing ${missing[@]+"${missing[@]}"}

# The commit of the daemon as built (someone may be editing the tree).
commit="$(git rev-parse --short HEAD)$([ -z "$(git status --porcelain -- cri image store confine)" ] || echo ', with uncommitted changes')"
cargo build --release -p bulkhead-cri -p bulkhead-bench
target="${CARGO_TARGET_DIR:-target}/release"

# Where the daemons would keep things without their private paths.
host_paths=(/var/lib/containerd /run/containerd /opt/containerd /var/lib/bulkhead /run/bulkhead /etc/cni/net.d)
existed=()
for p in "${host_paths[@]}"; do [ ! -e "$p" ] || existed+=("$p"); done

base="$(mktemp -d /var/tmp/bulkhead-image-pull.XXXXXX)"
image="$base/fs.ext4"
mnt="$base/mnt"
bench_pid=
cleanup() {
    local status=$? p
    set +e
    stop_bench_group
    unmount_tree "$mnt" # mounts below it (there should be none) first
    free_loop "$image"
    rm -rf "$base"
    # Nothing may be left.
    local left=0
    if [ -n "$bench_pid" ] && pgrep -g "$bench_pid" >/dev/null; then
        echo "LEFT: processes in group $bench_pid: $(pgrep -g "$bench_pid" | tr '\n' ' ')" >&2
        left=1
    fi
    if grep -q " $base" /proc/self/mountinfo; then echo "LEFT: mounts under $base" >&2; left=1; fi
    if [ -n "$(losetup -j "$image" 2>/dev/null)" ]; then echo "LEFT: loop device on $image" >&2; left=1; fi
    if [ -e "$base" ]; then echo "LEFT: $base" >&2; left=1; fi
    for p in "${host_paths[@]}"; do
        if [ -e "$p" ] && ! printf '%s\n' "${existed[@]}" | grep -qx "$p"; then
            echo "LEFT: $p, created during the run" >&2
            left=1
        fi
    done
    [ "$left" = 1 ] || echo "cleaned up: no process, mount, loop device or directory left"
    [ "$status" != 0 ] || [ "$left" = 0 ] || status=1
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

make_journaled_fs "$image" "$mnt"
echo "contenders' roots and the registry on $(findmnt -n -o SOURCE,FSTYPE,OPTIONS "$mnt") at $mnt (a journaled ext4 image on $(findmnt -n -o FSTYPE -T /var/tmp))"

echo "date:       $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:       $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit:     $commit"
echo "containerd: $(/usr/bin/containerd --version)"
echo "registry:   $(/usr/bin/docker-registry --version 2>&1 | head -n1)"
echo "curl:       $(curl --version | head -n1)"
echo "tar:        $(tar --version | head -n1); $(gzip --version | head -n1)"
cmd=("$target/image-pull" --bulkhead "$target/bulkhead" --workdir "$mnt" "$@")
# The registry's temporary storage goes on the same file system (TMPDIR).
run_bench "$mnt" "${cmd[@]}"
