"""The issuer: the management cluster's side of meshtrust (`meshtrust-issuer`).

It publishes what the management cluster declares (IssuedCertificates and PodBounceDirectives in
namespaces named after remote clusters) to the desired-state bucket, authorises and signs the
CSRs the agents send, records every signature in an append-only ledger, and mirrors the agents'
status reports onto the declarations. See docs/issuer.md.

Deliberately not here: anything that touches a remote cluster (agents connect out to the bus;
nothing connects in), and private keys of issued intermediates (they never leave their cluster).
"""
