"""Storage limitation for Lethe itself: a year (LETHE_FORGET_AFTER_DAYS) after a person's
last erasure, the sweep forgets their events and lifecycles, and lifted holds go a year
after their lift; the audit stays and still proves the erasure. Sweeps through
`lethe purge`, holds through `lethe hold`, the late event through the client and a real
worker, on the embedded default and on Redis + PostgreSQL."""

from __future__ import annotations

import json
from typing import Any

import pendulum
import pytest
import sqlalchemy as sa
from harness import Lethe
from sweeping import NOW, make_shop, seed_store, store_url  # noqa: F401

from worker.store.schema import Hold, StoredLifecycle

# Sweeps on the run's clock: the first erases what the seed made due, the second what
# fell due since, the third comes more than 365 days after the first.
FIRST = "2022-06-01T03:00:00+02:00"
SECOND = "2023-03-01T03:00:00+01:00"
THIRD = "2023-09-01T03:00:00+02:00"
FOURTH = "2023-10-01T03:00:00+02:00"

ASKED = "prospect:gone-1"  # contacted, then asked for erasure: three lifecycles
VISITORS = ["visitor:gone-2", "visitor:gone-5", "visitor:gone-6"]  # navigation only
FORGOTTEN = {ASKED, *VISITORS}

STILL_A_CUSTOMER = "customer:kept-3"  # old visits erased, orders kept 5 years
DISPUTED = "visitor:kept-4"  # erased, then a dispute opened that nobody closed
HELD = "visitor:kept-7"  # erased, then held by hand
RECENT = "visitor:kept-8"  # erased by the second sweep: less than a year before the third
KEPT = {STILL_A_CUSTOMER, DISPUTED, HELD, RECENT}


def _event(event_id: str, event_type: str, subject: str, at: str, **data: Any) -> dict:
    return {"id": event_id, "type": event_type, "subject": subject, "occurred_at": at, "data": data}


def _visit(n: int, subject: str, at: str = "2020-01-10T10:00:00+01:00") -> dict:
    return _event(f"visit-{n}", "visit.recorded", subject, at, path="/")


SEED = [
    _event("ask-0", "contact.made", ASKED, "2021-03-01T10:00:00+01:00", direction="inbound"),
    _event("ask-1", "erasure.requested", ASKED, "2022-04-01T10:00:00+02:00"),
    *(_visit(n, s) for n, s in enumerate([*VISITORS, DISPUTED, HELD])),
    _visit(10, STILL_A_CUSTOMER),
    _event("order-1", "order.closed", STILL_A_CUSTOMER, "2022-01-10T10:00:00+01:00"),
    _visit(11, RECENT, "2021-06-01T10:00:00+02:00"),  # due 2022-07-01
]


def _store(lethe: Lethe) -> sa.Engine:
    return sa.create_engine(store_url(lethe))


def _subjects(lethe: Lethe, table: str) -> set[str]:
    engine = _store(lethe)
    try:
        with engine.connect() as connection:
            return set(
                connection.execute(sa.text(f"select distinct subject from {table}")).scalars()
            )
    finally:
        engine.dispose()


def _update(lethe: Lethe, statement: Any) -> None:
    engine = _store(lethe)
    try:
        with engine.begin() as connection:
            assert connection.execute(statement).rowcount
    finally:
        engine.dispose()


def _purge(lethe: Lethe, now: str) -> dict:
    result = lethe.run("purge", "--now", now, "--format", "json", check=False)
    summary = json.loads(result.stdout)
    if result.returncode == 4:  # the first sweep on a register waits for a DPO
        result = lethe.run("purge", "--approve", str(summary["run"]), "--format", "json")
        summary = json.loads(result.stdout)
    assert summary["status"] == "done", result.stderr
    for subject in FORGOTTEN | KEPT:
        assert subject not in result.stderr
    return summary


def _proof(lethe: Lethe, subject: str) -> dict:
    return json.loads(lethe.run("audit", "--subject", subject, "--proof").stdout)


def _audit(lethe: Lethe, subject: str) -> list[dict]:
    return json.loads(lethe.run("audit", "--subject", subject, "--format", "json").stdout)


def test_a_year_after_the_last_erasure_lethe_forgets_the_person_but_keeps_the_proof(
    lethe: Lethe, request: pytest.FixtureRequest
):
    make_shop(lethe, request, people=10)
    lethe.env["LETHE_SWEEP_BATCH"] = "2"  # forgetting pages through several transactions
    seed_store(lethe, SEED)
    _purge(lethe, FIRST)
    seed_store(lethe, [_event("case-1", "dispute.opened", DISPUTED, FIRST, case="LIT-22-1")])
    lethe.run("hold", "place", HELD, "--reason", "case LIT-2022-7")
    for subject in (STILL_A_CUSTOMER, RECENT):
        lethe.run("hold", "place", subject, "--reason", "case LIT-2022-8")
        lethe.run("hold", "lift", subject, "--reason", "case closed")
    assert _purge(lethe, SECOND)["erased"] == 1  # RECENT's visits
    # the sweeps ran on past clocks; forgetting also waits a period of real time after
    # the erasure, so their real times are moved back to those clocks
    lc = StoredLifecycle.__table__
    _update(lethe, lc.update().where(lc.c.erased_at.is_not(None)).values(updated_at=lc.c.erased_at))
    # a hold lifted long ago
    long_ago = pendulum.datetime(2021, 1, 1, tz="UTC")
    holds = Hold.__table__
    _update(
        lethe,
        holds.update().where(holds.c.subject == STILL_A_CUSTOMER).values(lifted_at=long_ago),
    )
    audit_before = _audit(lethe, ASKED)
    proof_before = _proof(lethe, ASKED)
    assert proof_before["erasure_requested_at"] == ["2022-04-01T10:00:00+02:00"]
    assert proof_before["records_forgotten"] is False
    assert _subjects(lethe, "events") == FORGOTTEN | KEPT

    _purge(lethe, THIRD)

    assert _subjects(lethe, "events") == KEPT
    assert _subjects(lethe, "lifecycles") == KEPT
    assert sorted(
        (h["subject"], h["lifted_at"] is None)
        for h in json.loads(lethe.run("hold", "list", "--format", "json").stdout)
    ) == [(HELD, True), (RECENT, False)]
    # the audit is untouched, and the proof says the same, from the audit alone
    assert _audit(lethe, ASKED) == audit_before
    proof = _proof(lethe, ASKED)
    assert proof["records_forgotten"] is True and "LETHE_FORGET_AFTER_DAYS" in proof["note"]
    for same in ("erasure_requested_at", "erased_activities", "audit_rows", "audit_digest"):
        assert proof[same] == proof_before[same]
    assert proof["not_yet_erased"] == []

    # an old event arrives late: it starts a lifecycle of its own, due since its own
    # deadline, and nothing older comes back with it
    lethe.start_worker()
    before = lethe.store_count("events")
    lethe.python(
        "from worker.client import emit\n"
        f"emit('contact.made', subject={ASKED!r}, id='late-1',"
        " occurred_at='2020-06-01T10:00:00+02:00', data={'direction': 'inbound'})\n"
    )
    lethe.wait_stored(before + 1)
    late = json.loads(lethe.run("deadlines", "--subject", ASKED, "--format", "json").stdout)
    assert [(r["activity"], r["deadline_at"], r["state"]) for r in late] == [
        ("website.prospects", "2023-06-01T10:00:00+02:00", "due")
    ]
    assert _purge(lethe, FOURTH)["erased"] == 1
    new = [r for r in _audit(lethe, ASKED) if r not in audit_before]
    assert [(r["activity"], r["outcome"]) for r in new] == [
        ("website.prospects", "nothing_to_erase")
    ]
    proof = _proof(lethe, ASKED)
    assert proof["erasure_requested_at"] == ["2022-04-01T10:00:00+02:00"]
    assert proof["erased_activities"] == proof_before["erased_activities"]
    assert proof["not_yet_erased"] == [] and proof["audit_rows"] == len(audit_before) + 1
    # the digest stands for the rows: one more row, another digest
    assert proof["audit_digest"].startswith("sha256:")
    assert proof["audit_digest"] != proof_before["audit_digest"]
    logs = "".join(log.read_text() for log in lethe.logs)
    assert "Traceback" not in logs and ASKED not in logs


def test_a_sweep_on_a_past_clock_does_not_make_the_next_one_forget_at_once(
    lethe: Lethe, request: pytest.FixtureRequest
):
    # `lethe purge --now` (or a sender on the broker) may set a sweep's clock years back:
    # its erasures are dated then, but they happened now, and a year must pass from now
    make_shop(lethe, request, people=10)
    seed_store(lethe, [_visit(1, VISITORS[0])])
    assert _purge(lethe, FIRST)["erased"] == 1
    _purge(lethe, NOW)
    assert VISITORS[0] in _subjects(lethe, "events")
    assert VISITORS[0] in _subjects(lethe, "lifecycles")
