#!/usr/bin/env bash
# Runs the pod benchmark (bench/src/pod_start.rs): RunPodSandbox +
# CreateContainer + StartContainer of a busybox container until it runs
# (p50, p99), the runtime's own memory per running pod (PSS), and the wall
# time to run 110 pods with 8 clients at once, for bulkhead and for
# containerd's CRI plugin with runc and with crun, all driven by the same
# CRI client, interleaved. Run as root; arguments go to pod-start (e.g.
# --pods 10 --rounds 1, --phases memory --share-pid). The results are
# recorded in docs/benchmarks.md.
#
# Every contender's root, the pods' log directories and the registry's
# storage go on one journaled ext4 file system of their own (a sparse image
# under /var/tmp, loop-mounted for the run; see /work/shared/PEERS.md on the
# host's unjournaled root). Their state directories and sockets, which a node
# keeps under /run, go on a private tmpfs (/run is not a tmpfs on this VM,
# as it is on systemd hosts). On a hybrid cgroup host it mounts a v1 hugetlb
# hierarchy for the run (crun refuses hybrid cgroups while any controller is
# on the v2 hierarchy). At exit it stops whatever the bench left running,
# removes the two bridges and bulkhead's nftables table (neither daemon
# removes its bridge), unmounts, and checks that nothing is left: processes,
# mounts, loop device, veths, network namespaces, cgroups, nftables tables,
# iptables rules, and files the daemons or CNI made on the host.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
require_root

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
commit="$(git rev-parse --short HEAD)$([ -z "$(git status --porcelain -- cri monitor runtime network image store confine proto)" ] || echo ', with uncommitted changes')"
# bulkhead starts bulkhead-monitor from beside its own binary.
cargo build --release -p bulkhead-cri -p bulkhead-monitor -p bulkhead-runtime -p bulkhead-bench
target="${CARGO_TARGET_DIR:-target}/release"

bridges=(bhbench0 bhbenchc0)
# Host paths a daemon or CNI plugin might write to without its private paths;
# their listings before the run, to compare after.
host_paths=(/run/containerd /var/lib/containerd /opt/containerd /var/lib/bulkhead /run/bulkhead /etc/cni
    /var/lib/cni /var/run/netns /etc/bulkhead)
for b in "${bridges[@]}"; do
    if ip link show "$b" >/dev/null 2>&1; then
        echo "$b exists already: a previous run left it (remove it first: ip link del $b)" >&2
        exit 1
    fi
done
listing() { [ ! -e "$1" ] || find "$1" -xdev 2>/dev/null | sort; }
before="$(mktemp -d /var/tmp/bulkhead-pod-start-before.XXXXXX)"
trap 'rm -rf "$before"' EXIT # until cleanup takes over
for p in "${host_paths[@]}"; do listing "$p" >"$before/$(echo "$p" | tr / _)"; done

base="$(mktemp -d /var/tmp/bulkhead-pod-start.XXXXXX)"
image="$base/fs.ext4"
mnt="$base/mnt"
run="$base/run"
bench_pid=
cleanup() {
    local status=$? p left=0
    set +e
    if [ -n "$bench_pid" ] && kill -0 -- "-$bench_pid" 2>/dev/null; then
        echo "stopping what the bench left running (process group $bench_pid)"
        kill -TERM -- "-$bench_pid"
        sleep 3
        kill -KILL -- "-$bench_pid" 2>/dev/null
        sleep 1
    fi
    # Processes outside the group: pod monitors and shims detach from it.
    local strays
    strays="$(pgrep -f -- "$base" | tr '\n' ' ')"
    if [ -n "$strays" ]; then
        echo "LEFT: processes naming $base: $strays" >&2
        for p in $strays; do kill -KILL "$p" 2>/dev/null; done
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
        echo "LEFT: iptables rules for the containerd pods:" >&2
        iptables-save | grep -E 'bhbench|10\.220\.' >&2
        left=1
    fi
    if ip -o link | grep -q ': bhbench'; then echo "LEFT: links: $(ip -o link | grep ': bhbench' | cut -d: -f2 | tr '\n' ' ')" >&2; left=1; fi
    for p in /sys/fs/cgroup/*/bhbench; do
        if [ -e "$p" ]; then echo "LEFT: cgroup $p" >&2; left=1; fi
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
        fi
    done
    rm -rf "$before"
    unmount_hugetlb_v1 || left=1
    [ "$left" = 1 ] || echo "cleaned up: no process, mount, loop device, veth, bridge, network namespace, cgroup, nftables table, iptables rule or host file left"
    [ "$status" != 0 ] || [ "$left" = 0 ] || status=1
    exit "$status"
}
trap cleanup EXIT
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
cmd=("$target/pod-start" --bulkhead "$target/bulkhead" --workdir "$mnt" --statedir "$run" "$@")
# The registry's temporary storage goes on the same file system (TMPDIR).
run_bench "$mnt" "${cmd[@]}"
