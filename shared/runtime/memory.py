"""Keeping start-up objects out of the cyclic garbage collector's full passes.

A service imports tens of thousands of objects that live as long as the process (modules,
classes, functions: kubernetes-asyncio alone brings one class per API model), and every full
collection walks them all. Measured in the agent under bench/e2e.py: ~106k objects, full
collections of 57-73 ms, each one a pause of the event loop (of every watch, ack and reconcile).
`freeze_start_up()` collects once and moves what survives into the permanent generation, which
the collector never walks again (`gc.freeze`, as Instagram's web servers do before forking).
What the process allocates afterwards is collected as usual.

Called by each entry point's `main()` after its imports and before its event loop starts; not by
library code, so tests (one long process) are unaffected.
"""

from __future__ import annotations

import gc


def freeze_start_up() -> None:
    gc.collect()
    gc.freeze()
