"""`python -m devstack.hollow.profiled OUT MODULE [ARGS...]`: run MODULE as `python -m` would,
under cProfile timed by the main thread's CPU clock (`time.thread_time`, not the wall clock:
waiting in epoll and being preempted by other processes do not count), the profile written to
OUT when it exits (a SIGTERM that the module handles by returning included).

Only the main thread is profiled: the issuer's event loop, where its own work per CSR runs
(the signatures run in its executor's threads, which the fleet benchmark counts from /proc).
"""

from __future__ import annotations

import cProfile
import runpy
import sys
import time


def main() -> None:
    out, module, *args = sys.argv[1:]
    sys.argv = [module, *args]
    profile = cProfile.Profile(time.thread_time)
    profile.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit:
        pass
    finally:
        profile.disable()
        profile.dump_stats(out)


if __name__ == "__main__":
    main()
