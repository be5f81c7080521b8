"""The sweep's three overlapped stages (worker/sweeps/stages.py): every batch claimed is
recorded once, in order, or rolled back when another stage fails; the first error is the
one raised. The stages here are plain functions that log what happens to each batch; the
sweep's own (worker/sweeps/erasure.py) are run against real databases by the
integration tests."""

from __future__ import annotations

import contextlib
import gc
import threading
from dataclasses import dataclass, field

import pytest

from worker.sweeps.stages import run_batches


@dataclass
class Log:
    events: list[tuple[str, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, what: str, batch: int) -> None:
        with self.lock:
            self.events.append((what, batch))

    def of(self, what: str) -> list[int]:
        return [b for w, b in self.events if w == what]


@dataclass
class Batch:
    number: int
    log: Log

    @property
    def after(self) -> int:
        return self.number

    def abandon(self) -> None:
        self.log.add("abandoned", self.number)


def stages(log: Log, batches: int, fail: tuple[str, int] | None = None):
    def check(stage: str, number: int) -> None:
        if fail == (stage, number):
            raise RuntimeError(f"{stage} of batch {number} failed")

    def claim(after: int | None) -> Batch | None:
        number = 1 if after is None else after + 1
        check("claim", number)
        if number > batches:
            return None
        log.add("claimed", number)
        return Batch(number, log)

    def apply(batch: Batch) -> Batch:
        check("apply", batch.number)
        log.add("applied", batch.number)
        return batch

    def record(batch: Batch) -> None:
        # as the sweep's own: a recording that fails rolls its own transaction back
        try:
            check("record", batch.number)
        except RuntimeError:
            batch.abandon()
            raise
        log.add("recorded", batch.number)

    return claim, apply, record


@pytest.mark.parametrize("overlap", [False, True])
def test_every_batch_is_claimed_applied_and_recorded_once_in_order(overlap: bool) -> None:
    log = Log()
    run_batches(*stages(log, 7), overlap=overlap)
    assert log.of("claimed") == log.of("applied") == log.of("recorded") == list(range(1, 8))
    assert not log.of("abandoned")


def test_without_overlap_a_batch_is_recorded_before_the_next_is_claimed() -> None:
    # a SQLite store has one writer: the next claim would wait for this batch's commit
    log = Log()
    run_batches(*stages(log, 5), overlap=False)
    order = log.events
    for n in range(2, 6):
        assert order.index(("recorded", n - 1)) < order.index(("claimed", n))


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.parametrize("stage", ["claim", "apply", "record"])
def test_a_failed_stage_settles_every_open_batch_and_raises_its_error(
    overlap: bool, stage: str
) -> None:
    log = Log()
    with pytest.raises(RuntimeError, match=f"{stage} of batch 4 failed"):
        run_batches(*stages(log, 9, fail=(stage, 4)), overlap=overlap)
    claimed, recorded, abandoned = log.of("claimed"), log.of("recorded"), log.of("abandoned")
    # each batch claimed is either recorded (committed) or abandoned (rolled back)
    assert sorted(recorded + abandoned) == claimed
    assert not set(recorded) & set(abandoned)
    # nothing after the failed batch is recorded, and everything before it is
    assert recorded == [1, 2, 3]
    assert 4 not in recorded


@pytest.mark.parametrize("fail", [None, ("apply", 2)])
def test_the_cycle_collector_runs_less_often_while_batches_run_and_as_before_after(
    fail: tuple[str, int] | None,
) -> None:
    before = gc.get_threshold()
    seen: list[tuple[int, ...]] = []
    claim, apply, record = stages(Log(), 3, fail=fail)

    def applying(batch: Batch) -> Batch:
        seen.append(gc.get_threshold())
        return apply(batch)

    with pytest.raises(RuntimeError) if fail else contextlib.nullcontext():
        run_batches(claim, applying, record, overlap=True)
    assert seen and all(t[0] >= 20_000 and t[1:] == before[1:] for t in seen)
    assert gc.get_threshold() == before  # restored, even after a failure
