"""Command line: ``python -m gateway`` / ``consul-dns-gateway``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from gateway import options as cfg
from gateway.errors import StartupError

# One help line per option; flags are the option names with '-' for '_'.
HELP: dict[str, str] = {
    "listen": "HOST:PORT to serve DNS on, UDP and TCP; repeatable; IPv6 as [::1]:53 "
    "(default 127.0.0.1:53)",
    "upstream": "HOST[:PORT] of an upstream resolver for non-Consul names; repeatable "
    "(default: nameservers of /etc/resolv.conf, minus our own listen addresses)",
    "catalog": "file or folder of Consul service-definition JSON files (the embedded "
    "zones/catalog when neither this nor --consul is given)",
    "zones": "file or folder of RFC 1035 zone files served authoritatively "
    "(default: the embedded zones/ folder)",
    "domain": "the Consul domain (default consul)",
    "alt_domain": "a second domain answered like --domain",
    "datacenter": "the local datacenter (default dc1)",
    "consul": "Consul HTTP address, e.g. http://127.0.0.1:8500 (default $CONSUL_HTTP_ADDR)",
    "consul_token": "ACL token (default $CONSUL_HTTP_TOKEN); never logged",
    "consul_ca": "CA bundle for HTTPS to Consul (default $CONSUL_CACERT)",
    "consul_cert": "client certificate for HTTPS to Consul (default $CONSUL_CLIENT_CERT)",
    "consul_key": "client key for HTTPS to Consul (default $CONSUL_CLIENT_KEY)",
    "consul_tls_verify": "verify Consul's TLS certificate (default on)",
    "consul_watch_all": "watch every service from /v1/catalog/services up front "
    "(default: watch a service from its first query on)",
    "consul_max_stale": "seconds a Consul server may lag its leader (X-Consul-LastContact) "
    "before we ask the leader instead (default 10)",
    "consul_view_max_age": "seconds to keep answering from the last good view while "
    "Consul is unreachable, then SERVFAIL (default 3600)",
    "consul_idle_unwatch": "stop watching a service not queried for this many seconds "
    "(default 600)",
    "consul_first_query_timeout": "seconds the first query of an unwatched service may "
    "wait for Consul (default 2)",
    "consul_wait": "blocking-query wait in seconds (default 60)",
    "only_passing": "drop instances whose worst check is warning (default off)",
    "a_record_limit": "at most this many A/AAAA records, a weighted sample (default 0: all)",
    "service_ttl": "TTL per service, NAME=SECONDS, '*' for the default; repeatable "
    "(default *=0, as Consul)",
    "node_ttl": "TTL of node and addr answers (default 0)",
    "node_meta_txt": "add node meta as TXT records in the additional section (default on)",
    "soa_refresh": "SOA refresh (default 3600)",
    "soa_retry": "SOA retry (default 600)",
    "soa_expire": "SOA expire (default 86400)",
    "soa_min_ttl": "SOA minimum: negative-caching TTL downstream (default 0)",
    "udp_max_payload": "largest UDP answer we send to EDNS clients (default 1232)",
    "tcp_idle_timeout": "seconds before an idle TCP connection is closed (default 10)",
    "tcp_max_connections": "concurrent TCP connections per worker (default 1024)",
    "workers": "processes sharing the listen ports with SO_REUSEPORT (default 1)",
    "forward_timeout": "seconds to wait for one upstream before trying the next (default 1)",
    "forward_deadline": "seconds before a forwarded query gives up: stale or SERVFAIL (default 3)",
    "forward_max_inflight": "upstream queries in flight at most; more answer SERVFAIL "
    "(default 1024)",
    "cache_size": "forwarded answers kept, LRU (default 100000; 0 disables the cache)",
    "cache_min_ttl": "lower bound on cached TTLs (default 0)",
    "cache_max_ttl": "upper bound on cached TTLs (default 86400)",
    "cache_negative_max_ttl": "upper bound on negative-cache TTLs (default 3600)",
    "serve_stale": "seconds an expired answer may still be served when all upstreams fail "
    "(RFC 8767; default 86400; 0 disables)",
    "stale_answer_ttl": "TTL of stale answers (default 30)",
    "log_level": "debug, info, warning or error (default info)",
    "metrics_listen": "HOST:PORT for Prometheus metrics over HTTP (default off)",
}

_REPEATABLE = {"listen", "upstream", "service_ttl"}
_BOOLEAN = {k for k, conv in cfg.CONVERTERS.items() if conv is cfg._as_bool}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="consul-dns-gateway",
        description="DNS for Consul names from memory, everything else forwarded and cached.",
    )
    p.add_argument("--config", metavar="FILE", help="TOML file with the same options")
    for name in cfg.CONVERTERS:
        flag = "--" + name.replace("_", "-")
        if name in _BOOLEAN:
            group = p.add_mutually_exclusive_group()
            group.add_argument(flag, dest=name, action="store_const", const=True, help=HELP[name])
            group.add_argument(
                "--no-" + name.replace("_", "-"),
                dest=name,
                action="store_const",
                const=False,
                help=argparse.SUPPRESS,
            )
        elif name in _REPEATABLE:
            p.add_argument(flag, dest=name, action="append", metavar="VALUE", help=HELP[name])
        else:
            p.add_argument(flag, dest=name, metavar="VALUE", help=HELP[name])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    given: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    try:
        config = cfg.build(given, config_file=Path(args.config) if args.config else None)
    except StartupError as exc:  # any capability's: an option, a zone or catalog file, Consul
        print(f"consul-dns-gateway: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from gateway import app

    try:
        if config.workers > 1:
            return app.run_workers(config)
        app.run(config)
    except StartupError as exc:  # any capability's: an option, a zone or catalog file, Consul
        print(f"consul-dns-gateway: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"consul-dns-gateway: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
