"""meshtrust's own API: the reason codes its controllers write (`shared.api.reasons`).

Here, apart from `shared.k8s` (how to talk to a Kubernetes API) and `shared.controller` (how a
controller decides), because these names are the project's domain: they appear in object
status, Events, metrics and the bus's answers, and every service must spell them the same.
"""
