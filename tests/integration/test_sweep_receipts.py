"""A batch whose shop transaction committed but whose store transaction did not: the next
sweep still audits what was deleted, and the suppression list still gets the addresses.

The fault is real: a trigger in Lethe's store refuses audit rows, so the store's
transaction fails after the shop's has committed (as a worker killed between the
two would leave it); then the trigger goes and the next sweep runs.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from harness import Lethe
from sweeping import (
    EARLY,
    NOW,
    make_shop,
    secret_of,
    seed_store,
    store_url,
)

from worker.domain.hashing import subject_ref

POSTGRES_FAULT = [
    """CREATE FUNCTION lethe_test_refuse() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER lethe_test_refuse BEFORE INSERT ON erasures
       FOR EACH ROW EXECUTE FUNCTION lethe_test_refuse()""",
]
POSTGRES_MENDED = [
    "DROP TRIGGER lethe_test_refuse ON erasures",
    "DROP FUNCTION lethe_test_refuse()",
]
SQLITE_FAULT = [
    """CREATE TRIGGER lethe_test_refuse BEFORE INSERT ON erasures
       BEGIN SELECT RAISE(ABORT, 'injected fault'); END"""
]
SQLITE_MENDED = ["DROP TRIGGER lethe_test_refuse"]


def _store_sql(lethe: Lethe, statements: list[str]) -> None:
    engine = sa.create_engine(store_url(lethe))
    with engine.begin() as connection:
        for statement in statements:
            connection.exec_driver_sql(statement)
    engine.dispose()


@pytest.mark.parametrize("unsubscribed_again", [False, True])
def test_rows_deleted_by_a_batch_whose_audit_failed_are_audited_by_the_next_sweep(
    lethe: Lethe, request, unsubscribed_again: bool
):
    shop = make_shop(lethe, request, people=80)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    subscribers = {r["subject"]: r["email"] for r in shop.rows("newsletter_subscribers").values()}
    due = {s for s, a in shop.due() if a == "newsletter"}
    assert due, "the demo shop should have unsubscribed subscribers due"
    audited = shop.store("select count(*) from erasures")[0][0]

    _store_sql(lethe, SQLITE_FAULT if lethe.embedded else POSTGRES_FAULT)
    failed = lethe.run("purge", "--now", NOW, check=False)
    assert "Traceback" not in failed.stderr and "audited by the next sweep" in failed.stderr
    assert failed.returncode != 0
    still = {r["subject"] for r in shop.rows("newsletter_subscribers").values()}
    gone = {s for s in subscribers if s not in still}
    assert gone, "the shop's transaction should have committed before the store's failed"
    assert {s for s, a in shop.due() if a == "newsletter"} == due  # the store rolled back
    assert shop.store("select count(*) from erasures")[0][0] == audited

    _store_sql(lethe, SQLITE_MENDED if lethe.embedded else POSTGRES_MENDED)
    if unsubscribed_again:
        # the person clicks "unsubscribe" once more before the next sweep: a new deadline,
        # and still the row the failed try deleted must be audited and its address kept
        seed_store(
            lethe,
            [
                {
                    "id": f"again-{n}",
                    "type": "newsletter.unsubscribed",
                    "subject": subject,
                    "occurred_at": "2026-11-25T10:00:00+01:00",
                }
                for n, subject in enumerate(sorted(gone))
            ],
        )
    done = shop.purge_approved(NOW)
    assert done["status"] == "done" and done["failed"] == 0
    assert not {s for s, a in shop.due() if a == "newsletter"}
    newsletter = [
        r for r in shop.audit() if r["activity"] == "newsletter" and r["run_id"] == done["run"]
    ]
    assert len(newsletter) == len(due)
    secret = secret_of(lethe)
    by_ref = {r["subject_ref"]: (r["outcome"], r["rows"]) for r in newsletter}
    # deleted by the failed try, so found by nobody now: audited from its receipt
    assert {by_ref[subject_ref(secret, s)] for s in gone} == {("erased", 1)}
    emails = sorted(subscribers[s] for s in gone)
    out = lethe.python(
        f"from worker.client import is_suppressed\nprint(all(map(is_suppressed, {emails!r})))\n"
    ).stdout
    assert out.strip() == "True"
    assert _receipts_left(lethe) == 0


def _receipts_left(lethe: Lethe) -> int:
    from worker.store.receipts import receipts_url

    engine = sa.create_engine(receipts_url(store_url(lethe)))
    with engine.connect() as connection:
        left = connection.exec_driver_sql("SELECT count(*) FROM erasure_receipts").scalar_one()
    engine.dispose()
    return left
