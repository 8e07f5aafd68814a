"""The process toolkit shared by the tests and the benchmark (see README.md here).

Real servers on loopback -- Knot, dnsmasq, CoreDNS, a Consul agent or cluster, and the
gateway -- all on one base, :class:`harness.process.ServerProcess`.
"""
