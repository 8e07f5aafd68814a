#!/bin/sh
# The app container of the lab: the app (python3's http.server on port 8080 serving
# /srv/app, whose file "health" the Consul check reads) and its own Consul client
# agent, which registers the app from the static service definition in
# /consul/config. Removing /srv/app/health makes the check fail (HTTP 404).
set -eu
touch /srv/app/health
echo "app on $(hostname)" > /srv/app/index.html
python3 -m http.server --directory /srv/app 8080 >/dev/null 2>&1 &
exec /usr/local/bin/consul agent "$@"
