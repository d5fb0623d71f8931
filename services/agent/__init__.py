"""The agent: one per remote cluster, the IssuedCertificate state machine of that cluster.

It applies the desired state the issuer publishes for its cluster (KV `meshtrust-desired`),
generates every private key inside the cluster, sends CSRs, checks and writes the issued bundles
(Istio's `cacerts`), asks the bouncer to restart pods, renews before expiry, and reports every
state change as a Kubernetes Event and a `status.changed` event. See docs/agent.md.

Run it as `meshtrust-agent` or `python -m services.agent`; settings come from `MESHTRUST_*`
environment variables (`services.agent.settings.AgentSettings`).
"""
