"""The generic parts of a controller that no service owns: the policy chain its decisions are
made of (`shared.controller.policy`) and the components that run its informers, controllers
and periodic work under `shared.runtime.supervise` (`shared.controller.components`).

Here because every service decides the same way (gather, decide through a chain of small pure
checks, act) and runs the same way, and should say both in one vocabulary. The package imports
nothing itself, so that importing the pure `policy` module never pulls in the Kubernetes client
that `components` needs. Deliberately not here: any domain knowledge (the CRDs and reason codes
are `shared.api`) and the controller runner itself (`shared.k8s.controller`).
"""
