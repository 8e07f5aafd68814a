#!/usr/bin/env bash
# Builds the Consul test agent (v1.16.4, the last MPL-2.0 release) from the Go
# module proxy and prints the path of the binary. Cached outside the repo; a
# `consul` on PATH of the same version is used as is. Nothing of Consul is
# committed: the wrapper module lives in the cache directory.
set -euo pipefail
# CI may run without HOME; Go and the cache below need one.
if [ -z "${HOME:-}" ]; then
  HOME=$(getent passwd "$(id -u)" | cut -d: -f6)
  export HOME
fi

# v1.16.4 is the last MPL-2.0 release; v1.16.3 (also MPL-2.0) is the fallback
# because the module proxy reachable here answers 403 "This module version is
# not available" for v1.16.4's zip. Never anything newer (BUSL from v1.17,
# v1.16.5 and v1.15.9 on).
VERSIONS=${CONSUL_TEST_VERSIONS:-"1.16.4 1.16.3"}
CACHE=${CONSUL_GATEWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/consul-dns-gateway}

# The first line of `$1 version` ("Consul v1.16.3"). The whole output is read before it is
# cut: in a `consul version | head -1 | grep -q` pipeline, head and grep stop reading
# early, consul then dies of SIGPIPE, and pipefail turned that into "wrong version" about
# one time in four, rebuilding a good cached binary.
version_line() {
  local out
  out=$("$1" version 2>/dev/null) || return 1
  printf '%s\n' "${out%%$'\n'*}"
}

for VERSION in $VERSIONS; do
  if command -v consul >/dev/null 2>&1 && [ "$(version_line consul)" = "Consul v$VERSION" ]; then
    command -v consul
    exit 0
  fi
  BIN=$CACHE/consul-$VERSION
  if [ -x "$BIN" ] && [ "$(version_line "$BIN")" = "Consul v$VERSION" ]; then
    echo "$BIN"
    exit 0
  fi
done

command -v go >/dev/null 2>&1 || { echo "build-consul: Go is needed to build Consul" >&2; exit 1; }
# The checksum database is not fully reachable through the proxy here (404 for
# some lookups); Consul's own go.sum, copied below, still pins the hashes of
# nearly every dependency.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod GOSUMDB=off

build() {
VERSION=$1
BIN=$CACHE/consul-$VERSION
case $VERSION in
  # troubleshoot v0.3.1 lacks troubleshoot/ports, which v1.16.4 imports: pin
  # the module to the v1.16.4 commit (MPL-2.0 at that commit).
  1.16.4) REPLACE="replace github.com/hashicorp/consul/troubleshoot => github.com/hashicorp/consul/troubleshoot v0.3.0-rc1.0.20231212194923-2b5841d3f624" ;;
  *) REPLACE="" ;;
esac

WORK=$CACHE/wrapper-$VERSION
mkdir -p "$WORK"
cd "$WORK"
cat > go.mod <<MOD
module consulbuild

go 1.20

require github.com/hashicorp/consul v$VERSION

$REPLACE

// Consul's own go.mod excludes these; excludes of dependencies are ignored.
exclude github.com/hashicorp/go-msgpack v1.1.5

exclude github.com/hashicorp/go-msgpack v1.1.6
MOD
cat > tools.go <<'GO'
//go:build tools

package consulbuild

import _ "github.com/hashicorp/consul"
GO
echo "build-consul: building Consul v$VERSION in $WORK (first time: several minutes)" >&2
# Consul's own go.sum pins every dependency's hash, so modules the checksum
# database does not answer for here are still verified.
DIR=$(go mod download -json "github.com/hashicorp/consul@v$VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -n "$DIR" ] || return 1
cp "$DIR/go.sum" go.sum
chmod u+w go.sum
go build -trimpath -o "$BIN.tmp" github.com/hashicorp/consul >&2 || return 1
mv "$BIN.tmp" "$BIN"
version_line "$BIN" >&2
echo "$BIN"
}

for VERSION in $VERSIONS; do
  if (build "$VERSION"); then exit 0; fi
  echo "build-consul: Consul v$VERSION could not be built here" >&2
done
exit 1
