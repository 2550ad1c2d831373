#!/usr/bin/env bash
# Install the system programs the test suite uses for real (never mocks):
#   promtool (prometheus)  - PrometheusRule checks and a live Prometheus
#   docker.io + debootstrap - container image build and container fault tests
#   chromium + driver       - the live view's browser test
#   valgrind                - the engine bench's instruction count (and its test)
#   fuse3 (libfuse3)        - chaos faultfs: disk faults and power cuts (mfusepy loads it)
#   iproute2, iptables      - chaos local target: network namespaces, partitions, loss, tc tbf
#   libfaketime             - chaos local target: clock skew (LD_PRELOAD)
#   etcd-server             - `exchange bench etcd` / `bench cluster --compare etcd` (and its test)
# As root (CI, these machines) missing packages are installed with apt-get.
# Otherwise nothing is installed: the tests that need a missing program skip
# and print which one. Idempotent and quiet when everything is present.
set -euo pipefail

want=()
command -v promtool >/dev/null 2>&1 || want+=(prometheus)
command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
command -v chromium >/dev/null 2>&1 || want+=(chromium)
command -v chromedriver >/dev/null 2>&1 || want+=(chromium-driver)
command -v valgrind >/dev/null 2>&1 || want+=(valgrind)
command -v fusermount3 >/dev/null 2>&1 || want+=(fuse3)
command -v ip >/dev/null 2>&1 || want+=(iproute2)
command -v tc >/dev/null 2>&1 || want+=(iproute2)
command -v iptables >/dev/null 2>&1 || want+=(iptables)
ls /usr/lib/*/faketime/libfaketime*.so.1 >/dev/null 2>&1 || want+=(libfaketime)
command -v etcd >/dev/null 2>&1 || want+=(etcd-server)

if [ ${#want[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "system-deps: not installing ${want[*]} (needs root and apt-get); tests that need them will skip" >&2
    exit 0
fi
echo "system-deps: installing ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
# --no-install-recommends keeps chromium and docker lean; a failure here is not
# fatal: the dependent tests skip and say why.
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null \
    || echo "system-deps: apt-get install ${want[*]} failed; dependent tests will skip" >&2
