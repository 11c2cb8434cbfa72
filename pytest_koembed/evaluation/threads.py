"""Thread pools while mteb clusters: scikit-learn's k-means capped, the encoder not.

mteb's clustering evaluators fit scikit-learn's ``MiniBatchKMeans``, whose OpenMP and BLAS pools
start one thread per core. On a small, busy machine those threads fight each other and every
other process for the cores: on 2 cores a clustering task ran several times slower with two
threads than with one (``benchmarks/clustering_threads.py``). :func:`clustering_cap` caps every
OpenMP/BLAS pool loaded in the process (threadpoolctl) for one mteb evaluation of a clustering
task; :func:`full_threads`, around each call of the encoder inside it, gives the pools back the
counts they had before the cap, so the encoder (torch shares one OpenMP runtime with them)
keeps every core. A cap never raises a pool's count: an xdist worker's share stays its share.

The cap changes no value: ``MiniBatchKMeans`` gives the same labels at any thread count
(``tests/test_clustering_threads.py`` checks the sample clustering task).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

# The threads of the clustering phase, measured fastest on the 2-core development machine, idle
# and under load (benchmarks/clustering_threads.py, docs/performance.md).
CLUSTERING_THREADS = 1

# The pools' counts before the innermost active cap (threadpool_info()), None outside a cap.
_before_cap: ContextVar[list[dict[str, Any]] | None] = ContextVar("before_cap", default=None)


def is_clustering(task: Any) -> bool:
    """``task`` (an mteb task) is scored by clustering its embeddings (fast or legacy)."""
    return str(getattr(task.metadata, "type", "")) == "Clustering"


@contextmanager
def clustering_cap(threads: int | None) -> Iterator[None]:
    """Every OpenMP/BLAS pool at most ``threads`` threads for the block; None: no cap."""
    if threads is None:
        yield
        return
    from threadpoolctl import threadpool_info, threadpool_limits

    before = threadpool_info()
    limits = [dict(lib, num_threads=min(lib["num_threads"], threads)) for lib in before]
    token = _before_cap.set(before)
    try:
        with threadpool_limits(limits=limits):
            yield
    finally:
        _before_cap.reset(token)


@contextmanager
def full_threads() -> Iterator[None]:
    """Inside :func:`clustering_cap`: the pools' counts from before the cap (for encoding)."""
    before = _before_cap.get()
    if before is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=before):
        yield
