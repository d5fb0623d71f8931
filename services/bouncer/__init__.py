"""The bouncer: one per remote cluster, it restarts the pods of a PodBounceDirective after an
issuance, selector by selector, and answers `bounce.requested` with `bounce.completed`.

`__main__` starts it and `app` wires it; `bounce` does the bounce over one directive and
issuance; `handlers` maps the bus event to it; `policies` holds every decision as a pure
function.
See docs/bouncer.md.
"""
