# Consul ACL policy for consul-dns-gateway: read-only, nothing else.
#
#   consul acl policy create -name dns-gateway -rules @deploy/consul-acl-policy.hcl
#   consul acl token create -description "consul-dns-gateway" -policy-name dns-gateway
#
# Give the token's SecretID to the gateway as CONSUL_HTTP_TOKEN (or consul_token in
# its TOML file; a --consul-token flag would show in the process list).
#
# service:read  /v1/catalog/services, /v1/health/service/<name>  (service answers)
# node:read     /v1/catalog/nodes, node part of health entries   (<node>.node, PTR)
# query:read    /v1/query/<name>/execute                         (<name>.query)
# /v1/catalog/datacenters needs no permission.
#
# Narrow the prefixes ("" = everything) to what DNS may reveal. With too little,
# Consul filters answers silently (they look like "no such service"); the gateway
# logs a warning when Consul says it filtered an answer.

service_prefix "" {
  policy = "read"
}

node_prefix "" {
  policy = "read"
}

query_prefix "" {
  policy = "read"
}
