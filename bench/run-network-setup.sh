#!/usr/bin/env bash
# Runs the pod network benchmark (bench/src/network_setup.rs): per-pod
# network setup and teardown, bulkhead's native mode against the CNI bridge
# plugin chain (Debian's containernetworking-plugins: bridge + host-local,
# then portmap, exec'd by bulkhead's CNI runner as go-cni execs them),
# interleaved pod by pod. Run as root; arguments go to network-setup (e.g.
# --pods 100, --host-port). The results are recorded in docs/benchmarks.md.
#
# Each contender has its own bridge, pod CIDR and state under a temporary
# directory; at exit the script checks that no veth, namespace pin,
# nftables table or per-pod iptables rule is left.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
require_root

missing=()
[ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
command -v nft >/dev/null || missing+=(nftables)
install_missing ${missing[@]+"${missing[@]}"}

commit="$(git rev-parse --short HEAD)$([ -z "$(git status --porcelain -- network)" ] || echo ', with uncommitted changes in network/')"
cargo build --release -p bulkhead-bench --bin network-setup
target="${CARGO_TARGET_DIR:-target}/release"

echo "date:    $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "host:    $(nproc) cores, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit:  $commit"
echo "plugins: containernetworking-plugins $(dpkg-query -W -f='${Version}' containernetworking-plugins); $(nft --version)"
cmd=("$target/network-setup" "$@")
echo "+ ${cmd[*]}"
"${cmd[@]}"

# Nothing may be left: veths of either bridge, pinned namespaces, tables, pod rules.
sleep 1 # veths of the last pods go in the background
left=0
if ip -o link | grep -Eq ': bh(bn|bc)[0-9]+|: bhbenchpod'; then echo "LEFT: $(ip -o link | grep -E ': bh' | cut -d: -f2)" >&2; left=1; fi
if grep -q bulkhead-network-bench- /proc/self/mountinfo; then echo "LEFT: namespace pins" >&2; left=1; fi
if nft list tables | grep -Eq 'bhbn[0-9]+'; then echo "LEFT: nftables table" >&2; left=1; fi
if iptables-save -t nat 2>/dev/null | grep -q benchpod; then echo "LEFT: per-pod iptables rules" >&2; left=1; fi
[ "$left" = 1 ] || echo "cleaned up: no veth, namespace, table or pod rule left"
exit "$left"
