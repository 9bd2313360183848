#!/usr/bin/env bash
# Installs the Debian packages eddy's build, tests and demo need. Idempotent:
# it only calls apt-get when something is missing. Run as root.
set -euo pipefail

packages=(
  clang llvm libbpf-dev bpftool   # kernel programs (bpf2go)
  etcd-server                      # the control plane's store
  protobuf-compiler                # collector→analyzer protocol
  fio                              # reference workloads
  rclone fuse3                     # a slow remote behind a FUSE mount
  prometheus                       # a real Prometheus (e2e scraping) and promtool (rule tests)
  python3-torch                    # DataLoader workloads (prefetch, profile tests)
  python3-numpy python3-venv       # profile tests: NumPy memmaps, a venv interpreter
  sqlite3 gzip                     # profile tests: programs nobody here wrote
  jq
  containerd runc containernetworking-plugins  # the real node (test/node)
  busybox-static iptables conntrack iproute2   #   workload image, Services
)
# The collector's syscall hooks are the syscalls:* trace events, which need
# tracefs; without it they fall back to raw_syscalls (a program on every
# syscall of the node), and the kernel tests that check the trace events fail.
# Hosts usually mount it at boot; a fresh VM may not.
mount_tracefs() {
  if [ "$(stat -f -c %T /sys/kernel/tracing 2>/dev/null)" = tracefs ] ||
     [ "$(stat -f -c %T /sys/kernel/debug/tracing 2>/dev/null)" = tracefs ]; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    echo "tracefs is not mounted; as root: mount -t tracefs nodev /sys/kernel/tracing" >&2
    return 1
  fi
  echo "mounting tracefs at /sys/kernel/tracing"
  mount -t tracefs nodev /sys/kernel/tracing
}

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  mount_tracefs
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing Debian packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
mount_tracefs
