"""A part's batches in three stages, overlapped: claim, apply, record.

    claim   the next batch: its store transaction opens and stays open
    apply   it to the shop, which commits
    record  it in the store (audit, suppression, payloads), which commits

With `overlap`, each stage has a thread: the claim of batch k+1 and the recording
of batch k-1 run while batch k is applied, so Python works on one batch while the
databases work on the others (the GIL is released while a statement runs). Without
it (a SQLite store, which has one writer), a batch is recorded before the next is
claimed.

At most three batches are open. When a stage fails, the batches in the other stages
settle before the error is raised: the one being recorded commits (or rolls back on
its own error), the one claimed or applied is abandoned, which rolls its store
transaction back: its lifecycles are due again, as a killed worker leaves them
(worker/sweeps/erasure.py says how the next sweep finishes them).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from worker.collector import fewer_collections


class Open(Protocol):
    """A batch whose store transaction is open."""

    @property
    def after(self) -> Any:
        """Where the next claim starts."""

    def abandon(self) -> None:
        """Roll its store transaction back."""


C = TypeVar("C", bound=Open)
A = TypeVar("A", bound=Open)


@fewer_collections()
def run_batches(
    claim: Callable[[Any], C | None],
    apply: Callable[[C], A],
    record: Callable[[A], None],
    *,
    overlap: bool,
) -> None:
    """Claim, apply and record batches until `claim` finds none (it gets the `after` of
    the batch before, None at first). `record` commits its batch, or rolls it back
    itself when it fails. Python's cycle collector runs less often meanwhile
    (worker/collector.py)."""
    if not overlap:
        after = None
        while (claimed := claim(after)) is not None:
            after = claimed.after
            record(_applied(apply, claimed))
        return
    with (
        ThreadPoolExecutor(1, thread_name_prefix="lethe-sweep-claim") as claimer,
        ThreadPoolExecutor(1, thread_name_prefix="lethe-sweep-record") as recorder,
    ):
        claiming: Future[C | None] | None = claimer.submit(claim, None)
        recording: Future[None] | None = None
        try:
            while claiming is not None:
                claimed = claiming.result()
                claiming = None
                if claimed is None:
                    break
                claiming = claimer.submit(claim, claimed.after)
                applied = _applied(apply, claimed)
                if recording is not None:
                    previous, recording = recording, None
                    try:
                        previous.result()  # the batch before is committed, or its error raised
                    except BaseException:
                        applied.abandon()
                        raise
                recording = recorder.submit(record, applied)
        except BaseException:
            _settle(claiming, abandon=True)
            _settle(recording, abandon=False)
            raise
        if recording is not None:
            recording.result()


def _applied(apply: Callable[[C], A], claimed: C) -> A:
    try:
        return apply(claimed)
    except BaseException:
        claimed.abandon()
        raise


def _settle(stage: Future[Any] | None, *, abandon: bool) -> None:
    """Wait for a stage in flight while an error is raised; the first error is the one
    reported (a second one has rolled its own batch back)."""
    if stage is None:
        return
    with contextlib.suppress(Exception):
        batch = stage.result()
        if abandon and batch is not None:
            batch.abandon()
