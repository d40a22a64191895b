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
# The file systems, the hugetlb hierarchy for crun and the cleanup at exit
# (which checks that nothing is left on the host) are run_pod_bench's, in
# bench/common.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

. bench/common.sh
require_root
run_pod_bench pod-start "$@"
