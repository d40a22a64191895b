#!/usr/bin/env bash
# Runs the streaming benchmark (bench/src/streaming.rs): the exec round trip
# (Exec RPC, SPDY upgrade, streams, until the v4 status and the end of the
# session) of `/bin/busybox true` (p50, p99), and port-forward throughput
# over 1 GiB through one SPDY data stream, from the pod and to it (MiB/s),
# for bulkhead and for containerd's CRI plugin with runc and with crun, all
# driven by the same CRI and streaming clients, interleaved. Run as root;
# arguments go to streaming (e.g. --rounds 1 --execs 20 --mib 64). The
# results are recorded in docs/benchmarks.md.
#
# The file systems, the hugetlb hierarchy for crun and the cleanup at exit
# (which checks that nothing is left on the host) are run_pod_bench's, in
# bench/common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
require_root
run_pod_bench streaming "$@"
