"""Worker process pools of the data builders (feature cache, synthetic dataset).

Both use the ``forkserver`` start method (``spawn`` where the platform lacks it). Forking the
builder itself is unsafe: by then it may run torch intra-op threads, a feature-extractor
thread pool, tqdm or W&B threads, and a child forked while another thread holds a lock can
deadlock. The fork server is a fresh single-threaded process; it imports the modules the
workers run once, so every worker forked from it starts with them (torch included) loaded.
As with ``spawn``, a script that builds with workers must guard its entry point with
``if __name__ == "__main__":``.
"""
from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from multiprocessing.pool import Pool

# The modules whose functions the workers run (imported by the fork server when it starts).
PRELOAD = ("datamodules.parallel_decode", "datamodules.synth", "datamodules.inference")


def worker_pool(processes: int, initializer: Callable[[], None] | None = None) -> Pool:
    """A ``multiprocessing`` pool of ``processes`` workers started safely (see above)."""
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["__main__", *PRELOAD])
    else:
        ctx = mp.get_context("spawn")
    return ctx.Pool(processes, initializer=initializer)
