#!/usr/bin/env bash
# Installs the Debian packages the tests and the benchmark drive as real peers:
# dig (bind9-dnsutils), Knot (the upstream authoritative server), dnsmasq
# (a peer in the benchmark), dnsperf, prlimit (util-linux: a gateway under a low
# descriptor limit), ip (iproute2: the network namespaces of the
# access-control tests), systemd-analyze (systemd: checks the unit files in
# deploy/; no running systemd is needed), and for the container lab (deploy/lab/):
# podman with runc (crun, podman's default, cannot start containers here: see
# deploy/lab/containers.conf), debootstrap for the locally built base image, nsenter
# (util-linux) to run podman in the lab's own network namespace. Only what is
# missing, only with apt-get.
set -euo pipefail
need=()
command -v dig     >/dev/null 2>&1 || need+=(bind9-dnsutils)
command -v knotd   >/dev/null 2>&1 || need+=(knot)
command -v dnsmasq >/dev/null 2>&1 || need+=(dnsmasq-base)
command -v dnsperf >/dev/null 2>&1 || need+=(dnsperf)
command -v getent  >/dev/null 2>&1 || need+=(libc-bin)
command -v prlimit >/dev/null 2>&1 || need+=(util-linux)
PATH="$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v podman  >/dev/null 2>&1 || need+=(podman)
command -v runc    >/dev/null 2>&1 || need+=(runc)
command -v nsenter >/dev/null 2>&1 || need+=(util-linux)
PATH="$PATH:/usr/sbin:/sbin" command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >&2
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" >&2
