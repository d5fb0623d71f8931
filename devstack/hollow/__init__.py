"""Hollow clusters (the kubemark idea): many clusters' agents and bouncers in a few processes.

`devstack.hollow.fleet.HollowFleet` brings up nats-server, the emulated clusters (mgmt and N
remote clusters, served by one or a few `meshtrust-kubeapi` processes), the issuer, and a few
hollow processes (`python -m devstack.hollow`), each running the production agent and bouncer
of a share of the clusters (`devstack.hollow.runner`). docs/benchmarks.md ("Fleet") has why and
what it measures.
"""
