"""Python's cycle collector, run less often during batch work.

A batch (a sweep's 2,000 lifecycles, ingestion's 500 events) allocates tens of thousands
of tuples, rows and lists that live until it is written. With the default threshold
(700 allocations) the collector ran 1,250 times in a sweep of 90,000 lifecycles, walking
them again each time: a quarter of the sweep's Python time, and 8 % of ingestion's
(bench/README.md, "Sweeps", 2026-12-06 evening). What a batch leaves is freed by
reference counting; the rare cycle waits for a later collection.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def fewer_collections(threshold: int = 20_000) -> Iterator[None]:
    """Raise the collector's first threshold for the duration (process-wide), then put
    it back, failure or not. Also a decorator: `@fewer_collections()`."""
    before = gc.get_threshold()
    gc.set_threshold(max(threshold, before[0]), *before[1:])
    try:
        yield
    finally:
        gc.set_threshold(*before)
