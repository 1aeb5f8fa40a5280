"""The garbage collector paused around a scheduling cycle: a process-wide setting, so it is set
here, at the edge, by whoever runs a cycle (the control plane, the simulator, the benchmarks),
never inside the pure `policies` package."""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused_gc() -> Iterator[None]:
    """No garbage collection inside: a cycle allocates a few objects per job, none in reference
    cycles, and a collection triggered mid-cycle would walk the whole snapshot and backlog for nothing."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
