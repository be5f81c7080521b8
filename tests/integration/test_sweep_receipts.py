"""A batch whose shop transaction committed but whose store transaction did not: the next
sweep still audits what was deleted, and the suppression list still gets the addresses.

The fault is real: a trigger in Lethe's store refuses the newsletter's audit rows, so the
store's transaction fails after the shop's has committed (as a worker killed between the
two would leave it); then the trigger goes and the next sweep runs.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from harness import Lethe
from sweeping import (
    EARLY,
    NOW,
    Shop,
    make_shop,
    one_row_per_erasure,
    secret_of,
    seed_store,
    store_url,
)

from worker.domain.hashing import subject_ref

POSTGRES_FAULT = [
    """CREATE FUNCTION lethe_test_refuse() RETURNS trigger AS $$
       BEGIN RAISE EXCEPTION 'injected fault'; END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER lethe_test_refuse BEFORE INSERT ON erasures
       FOR EACH ROW WHEN (NEW.activity = 'newsletter') EXECUTE FUNCTION lethe_test_refuse()""",
]
POSTGRES_MENDED = [
    "DROP TRIGGER lethe_test_refuse ON erasures",
    "DROP FUNCTION lethe_test_refuse()",
]
SQLITE_FAULT = [
    """CREATE TRIGGER lethe_test_refuse BEFORE INSERT ON erasures
       WHEN NEW.activity = 'newsletter' BEGIN SELECT RAISE(ABORT, 'injected fault'); END"""
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
    newsletter_audit = "select count(*) from erasures where activity = 'newsletter'"
    audited = shop.store(newsletter_audit)[0][0]

    _store_sql(lethe, SQLITE_FAULT if lethe.embedded else POSTGRES_FAULT)
    failed = lethe.run("purge", "--now", NOW, check=False)
    assert "Traceback" not in failed.stderr and "audited by the next sweep" in failed.stderr
    assert failed.returncode != 0
    still = {r["subject"] for r in shop.rows("newsletter_subscribers").values()}
    gone = {s for s in subscribers if s not in still}
    assert gone, "the shop's transaction should have committed before the store's failed"
    assert {s for s, a in shop.due() if a == "newsletter"} == due  # the store rolled back
    assert (
        shop.store("select count(*) from erasures where activity = 'newsletter'")[0][0] == audited
    )

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


def test_a_store_failure_amid_small_batches_leaves_each_erasure_audited_once(lethe: Lethe, request):
    # Batches of 3: on PostgreSQL the batch after the one whose store transaction fails
    # has already been claimed and applied to the shop (a sweep's two stages overlap,
    # worker/sweeps/erasure.py); both roll back in the store, and the next sweep finishes
    # them with one audit row per erasure, whatever the shop had committed.
    lethe.env["LETHE_SWEEP_BATCH"] = "3"
    shop = make_shop(lethe, request, people=80)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    due = set(shop.due())
    assert {a for _, a in due} >= {"newsletter", "website.navigation"}

    _store_sql(lethe, SQLITE_FAULT if lethe.embedded else POSTGRES_FAULT)
    failed = lethe.run("purge", "--now", NOW, check=False)
    assert failed.returncode != 0 and "audited by the next sweep" in failed.stderr
    assert "Traceback" not in failed.stderr
    left = set(shop.due())
    assert {(s, a) for s, a in due if a == "newsletter"} <= left  # none of it committed
    assert left < due  # the batches before the failure did

    _store_sql(lethe, SQLITE_MENDED if lethe.embedded else POSTGRES_MENDED)
    _next_sweep_audits_each_erasure_once(lethe, shop, due)


def test_a_shop_lost_amid_small_batches_leaves_each_erasure_audited_once(
    distributed: Lethe, request
):
    # The shop's connection dies in the middle of a sweep in batches of 3 (a trigger ends
    # its own backend on the fifth customer it anonymises): the batch being recorded
    # commits, the one being applied and the one claimed ahead roll back, the run fails
    # saying the shop is unreachable, and the next sweep erases each lifecycle left once.
    lethe = distributed
    lethe.env["LETHE_SWEEP_BATCH"] = "3"
    shop = make_shop(lethe, request, people=80)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    due = set(shop.due())
    engine = sa.create_engine(shop.url)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE SEQUENCE lethe_test_updates")
        connection.exec_driver_sql(
            """CREATE FUNCTION lethe_test_cut() RETURNS trigger AS $$
               BEGIN
                 IF nextval('lethe_test_updates') = 5 THEN
                   PERFORM pg_terminate_backend(pg_backend_pid());
                 END IF;
                 RETURN NEW;
               END $$ LANGUAGE plpgsql"""
        )
        connection.exec_driver_sql(
            "CREATE TRIGGER lethe_test_cut BEFORE UPDATE ON customers "
            "FOR EACH ROW EXECUTE FUNCTION lethe_test_cut()"
        )

    failed = lethe.run("purge", "--now", NOW, check=False)
    assert failed.returncode != 0 and "unreachable" in failed.stderr
    assert "Traceback" not in failed.stderr
    left = set(shop.due())
    assert left and left < due, "batches before the cut should be committed, the rest due"

    with engine.begin() as connection:
        connection.exec_driver_sql("DROP TRIGGER lethe_test_cut ON customers")
    engine.dispose()
    _next_sweep_audits_each_erasure_once(lethe, shop, due)


def _next_sweep_audits_each_erasure_once(lethe: Lethe, shop: Shop, due: set) -> None:
    """The sweep after a failed one erases all that was due, each erasure audited once
    (whether the failed run had changed its rows in the shop or not), receipts dropped."""
    done = shop.purge_approved(NOW)
    assert done["status"] == "done" and done["failed"] == 0
    assert not shop.due()
    audited = one_row_per_erasure(shop.audit())
    assert set(audited.values()) == {1}
    secret = secret_of(lethe)
    assert {(subject_ref(secret, s), a) for s, a in due} <= {(r, a) for r, a, _ in audited}
    assert _receipts_left(lethe) == 0


def _receipts_left(lethe: Lethe) -> int:
    from worker.store.receipts import receipts_url

    engine = sa.create_engine(receipts_url(store_url(lethe)))
    with engine.connect() as connection:
        left = connection.exec_driver_sql("SELECT count(*) FROM erasure_receipts").scalar_one()
    engine.dispose()
    return left
