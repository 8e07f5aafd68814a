#!/usr/bin/env bash
# The container lab with podman: three Consul servers, two app containers (each with
# its own Consul client agent registering the app from app/web.json, with an HTTP
# health check), a site DNS server (the upstream for non-Consul names, zones/), the
# gateway with a Consul client agent beside it in its network namespace, and a client
# whose resolver is the gateway (--dns). All on one internal podman network
# (no route out, no address outside LAB_SUBNET).
#
#   deploy/lab/lab.sh up        build nothing, start everything (images: see below)
#   deploy/lab/lab.sh down      remove the containers and the network
#   deploy/lab/lab.sh status    the lab's containers
#   deploy/lab/lab.sh client CMD...   run CMD in the client, e.g. getent hosts web.service.consul
#   deploy/lab/lab.sh exec NAME CMD...  run CMD in container NAME, e.g. app-1 rm /srv/app/health
#
# Environment: LAB_NETNS (a network namespace, made if missing and deleted by `down`,
# in which podman makes the lab's bridge: the host's own namespace then sees no trace
# of the lab; the tests use it), LAB_NAME (prefix of every name, default cdg-lab), LAB_SUBNET (the first
# three octets of the lab's /24, default 10.153.53), LAB_GATEWAY_IMAGE and
# LAB_CONSUL_IMAGE (default: the two lines printed by tools/build-lab-image.sh,
# which is run when they are not set).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
export CONTAINERS_CONF=${CONTAINERS_CONF:-$HERE/containers.conf}
PATH="$PATH:/usr/sbin:/sbin"
NAME=${LAB_NAME:-cdg-lab}
NET=${LAB_SUBNET:-10.153.53}
LABEL=consul-dns-gateway-lab=$NAME
SERVERS=("$NET.11" "$NET.12" "$NET.13")
JOIN=()
for ip in "${SERVERS[@]}"; do JOIN+=(-retry-join "$ip"); done
# Port 53 for an unprivileged user inside the container's own network namespace.
LOW_PORTS=(--sysctl net.ipv4.ip_unprivileged_port_start=53)

images() {
  if [ -z "${LAB_GATEWAY_IMAGE:-}" ] || [ -z "${LAB_CONSUL_IMAGE:-}" ]; then
    local built
    built=$("$REPO/tools/build-lab-image.sh")
    LAB_GATEWAY_IMAGE=${LAB_GATEWAY_IMAGE:-$(sed -n 1p <<<"$built")}
    LAB_CONSUL_IMAGE=${LAB_CONSUL_IMAGE:-$(sed -n 2p <<<"$built")}
  fi
}

# run NAME IP [podman options...] -- IMAGE [args...]. The resolver is DNS (an address),
# else 127.0.0.1: no container ever sees the host's nameservers, which are outside the
# lab (and unreachable from its internal network anyway).
run() {
  local name=$1 ip=$2
  shift 2
  local opts=()
  while [ "$1" != "--" ]; do opts+=("$1"); shift; done
  shift
  podman run -d --name "$NAME-$name" --hostname "$name" --label "$LABEL" \
    --network "$NAME" --ip "$ip" --dns "${DNS:-127.0.0.1}" "${opts[@]}" "$@" >/dev/null
}

up() {
  images
  podman network create --internal --subnet "$NET.0/24" --label "$LABEL" "$NAME" >/dev/null
  local i
  for i in 1 2 3; do
    run "server-$i" "${SERVERS[$((i - 1))]}" -- "$LAB_CONSUL_IMAGE" agent -server \
      -bootstrap-expect 3 -node "server-$i" -bind "${SERVERS[$((i - 1))]}" -client 0.0.0.0 \
      -data-dir /consul/data "${JOIN[@]}" -log-level warn
  done
  # The app containers: the app and its own client agent, registering the app from
  # the static service definition (read-only mount) with its health check.
  for i in 1 2; do
    run "app-$i" "$NET.2$i" -v "$HERE/app/web.json:/consul/config/web.json:ro" \
      --entrypoint /usr/local/bin/lab-app -- "$LAB_CONSUL_IMAGE" -node "app-$i" \
      -bind "$NET.2$i" -data-dir /consul/data -config-dir /consul/config "${JOIN[@]}" \
      -log-level warn
  done
  # The site's DNS server, the gateway's upstream: the gateway image serving zones/
  # authoritatively, no Consul, and recursion for nobody but itself (its resolv.conf
  # names only itself, so it has no upstream at all).
  run site-dns "$NET.31" "${LOW_PORTS[@]}" -v "$HERE/zones:/etc/consul-dns-gateway/zones:ro" \
    -- "$LAB_GATEWAY_IMAGE" --listen 0.0.0.0:53 --zones /etc/consul-dns-gateway/zones \
    --allow-recursion 127.0.0.0/8
  # The gateway's Consul client agent owns the network namespace at $NET.53; the
  # gateway joins it and talks to the agent on 127.0.0.1:8500, as on a host.
  run gateway-agent "$NET.53" "${LOW_PORTS[@]}" -- "$LAB_CONSUL_IMAGE" agent \
    -node gateway -bind "$NET.53" -client 127.0.0.1 -data-dir /consul/data "${JOIN[@]}" \
    -log-level warn
  podman run -d --name "$NAME-gateway" --label "$LABEL" --network "container:$NAME-gateway-agent" \
    -v "$HERE/gateway.toml:/etc/consul-dns-gateway/gateway.toml:ro" "$LAB_GATEWAY_IMAGE" \
    --config /etc/consul-dns-gateway/gateway.toml \
    --consul http://127.0.0.1:8500 --upstream "$NET.31" >/dev/null
  # The client: its only resolver is the gateway.
  DNS=$NET.53 run client "$NET.100" --dns-search . --entrypoint sleep \
    -- "$LAB_GATEWAY_IMAGE" infinity
  echo "lab $NAME is up on $NET.0/24; try: $0 client getent hosts web.service.consul" >&2
}

down() {
  local ids
  # -t 0: the lab keeps no state worth a graceful stop. The gateway goes first: it
  # lives in its agent's network namespace, which podman keeps while it runs.
  podman rm -f -t 0 --ignore "$NAME-gateway" >/dev/null
  ids=$(podman ps -a -q --filter "label=$LABEL")
  [ -z "$ids" ] || podman rm -f -t 0 $ids >/dev/null
  if podman network exists "$NAME"; then podman network rm -f "$NAME" >/dev/null; fi
}

# up and down with LAB_NETNS: this script again, inside the namespace (nsenter, not
# `ip netns exec`, which remounts /sys and hides the cgroup tree from runc).
in_netns() {
  LAB_NETNS= nsenter --net="/run/netns/$LAB_NETNS" "$0" "$@"
}

case ${1:-} in
  up)
    if [ -n "${LAB_NETNS:-}" ]; then
      [ -e "/run/netns/$LAB_NETNS" ] || ip netns add "$LAB_NETNS"
      ip -n "$LAB_NETNS" link set lo up
      in_netns up
    else
      up
    fi ;;
  down)
    if [ -n "${LAB_NETNS:-}" ]; then
      if [ -e "/run/netns/$LAB_NETNS" ]; then in_netns down; ip netns del "$LAB_NETNS"; fi
    else
      down
    fi ;;
  status) podman ps -a --filter "label=$LABEL" --format '{{.Names}}\t{{.Status}}' ;;
  client) shift; exec podman exec "$NAME-client" "$@" ;;
  exec) shift; container=$1; shift; exec podman exec "$NAME-$container" "$@" ;;
  *) echo "usage: $0 up|down|status|client CMD...|exec NAME CMD..." >&2; exit 2 ;;
esac
