"""Library shared by the three meshtrust services: events, bus, k8s, pki, runtime."""
