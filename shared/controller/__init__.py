"""The generic parts of a controller that no service owns: the policy chain its decisions are
made of (`shared.controller.policy`).

Here because every service decides the same way (gather, decide through a chain of small pure
checks, act) and should say it in one vocabulary. Deliberately not here: any domain knowledge
(the CRDs and reason codes are `shared.api`), any I/O (`shared.k8s`, `shared.bus`).
"""
