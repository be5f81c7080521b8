"""Sweeps under faults: two at once, a SIGKILL mid-sweep, a shop that is down, targets that
do not fit the shop; and the guards: holds, erasure requests, approvals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from harness import LETHE, Lethe, copy_register, wait_for
from sweeping import (
    EARLY,
    LEGAL,
    NOW,
    Shop,
    lock_waits,
    make_shop,
    one_row_per_erasure,
    seed_store,
    store_url,
)


def _ready(lethe: Lethe, request: pytest.FixtureRequest, people: int = 300) -> Shop:
    """A seeded shop whose register was approved by a first, small sweep."""
    shop = make_shop(lethe, request, people=people)
    seed_store(lethe, shop.data.events)
    first = shop.purge_approved(EARLY)
    assert first["status"] == "done" and first["erased"] > 0
    return shop


def _purge_process(lethe: Lethe, *args: str, batch: int = 10) -> subprocess.Popen:
    env = {**lethe.env, "LETHE_SWEEP_BATCH": str(batch)}
    return subprocess.Popen(
        [LETHE, "purge", "--format", "json", *args],
        env=env,
        cwd=lethe.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _audited(shop: Shop) -> int:
    return shop.store("select count(*) from erasures")[0][0]


def _due(shop: Shop) -> set[tuple[str, str]]:
    return shop.due()


def _erased_at(lethe: Lethe, subject: str, activity: str, value: datetime | None = None):
    """A lifecycle's erased_at; set to `value` first when one is given."""
    from worker.store.schema import StoredLifecycle as lc

    which = (lc.subject == subject, lc.activity == activity)
    engine = sa.create_engine(store_url(lethe))
    try:
        with engine.begin() as connection:
            if value is not None:
                connection.execute(sa.update(lc).where(*which).values(erased_at=value))
            return connection.scalar(sa.select(lc.erased_at).where(*which))
    finally:
        engine.dispose()


def _anonymised_whole_or_untouched(shop: Shop) -> None:
    """No half-anonymised subject: each customer row is all original or all anonymised."""
    original = {r["id"]: r for r in shop.data.rows["customers"]}
    for cid, row in shop.rows("customers").items():
        changed = {
            c for c in ("email", "first_name", "last_name", "phone") if row[c] != original[cid][c]
        }
        assert changed in (set(), {"email", "first_name", "last_name", "phone"}), (cid, changed)


def test_two_sweeps_at_once_erase_each_lifecycle_once(lethe: Lethe, request):
    shop = _ready(lethe, request)
    due = _due(shop)
    audited = _audited(shop)
    sweeps = [_purge_process(lethe, "--now", NOW) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in sweeps]
    assert [r["status"] for r in results] == ["done", "done"], results
    assert sum(r["erased"] for r in results) == len(due)
    assert _due(shop) == set()
    audit = shop.audit()
    assert set(one_row_per_erasure(audit).values()) == {1}
    assert _audited(shop) > audited
    _anonymised_whole_or_untouched(shop)


def test_a_sweep_killed_mid_way_is_finished_by_the_next_with_one_audit_row_per_erasure(
    embedded: Lethe, request
):
    shop = _ready(embedded, request)
    due = _due(shop)
    audited = _audited(shop)
    sweep = _purge_process(embedded, "--now", NOW, batch=5)
    wait_for(lambda: _audited(shop) > audited + 20, 60, "the sweep to be under way")
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait(timeout=10)
    left = _due(shop)
    assert left and left < due, "the kill should land mid-sweep"
    _anonymised_whole_or_untouched(shop)

    after = shop.purge("--now", NOW)
    assert after["status"] == "done" and after["erased"] == len(left)
    assert _due(shop) == set()
    assert set(one_row_per_erasure(shop.audit()).values()) == {1}
    _anonymised_whole_or_untouched(shop)


def test_a_worker_killed_mid_sweep_finishes_it_after_restart(lethe: Lethe, request):
    # Redis gives the unacknowledged sweep back; the embedded broker forgot it, and
    # `lethe worker` resumes the interrupted run when it starts (worker/pipeline/embedded_start.py).
    shop = _ready(lethe, request)
    due = _due(shop)
    audited = _audited(shop)
    lethe.env.update({"LETHE_SWEEP_BATCH": "5", "LETHE_SWEEP_PARTS": "1"})
    lethe.start_worker()
    lethe.python(
        "from worker.app import app\n"
        f"app.send_task('lethe.sweep', kwargs={{'schedule': 'nightly-sweep', 'now': {NOW!r}}})\n"
    )
    wait_for(lambda: _audited(shop) > audited + 20, 60, "the sweep to be under way", lethe.logs)
    lethe.kill_workers(signal.SIGKILL)
    left = _due(shop)
    assert left and left < due, "the kill should land mid-sweep"
    _anonymised_whole_or_untouched(shop)

    lethe.start_worker()

    def runs() -> list[tuple]:
        return shop.store(
            "select schedule, status from purge_runs where schedule = 'nightly-sweep'"
        )

    # the run is closed just after its last batch commits: wait for that, not the batch
    wait_for(lambda: runs() != [("nightly-sweep", "running")], 60, "the sweep's end", lethe.logs)
    assert runs() == [("nightly-sweep", "done")] and not _due(shop)
    assert set(one_row_per_erasure(shop.audit()).values()) == {1}
    _anonymised_whole_or_untouched(shop)


def test_sweep_messages_from_anyone_on_the_broker_erase_nothing_they_should_not(
    embedded: Lethe, request
):
    shop = _ready(embedded, request, people=80)
    audited = _audited(shop)
    runs = shop.store("select count(*) from purge_runs")[0][0]
    dry = shop.purge("--dry-run", "--now", "2040-01-01T00:00:00+01:00")
    assert dry["status"] == "dry_run"
    embedded.start_worker()
    embedded.python(
        "from worker.app import app\n"
        # a dry run, named as if it were a running sweep
        f"app.send_task('lethe.sweep_part', args=[{dry['run']}])\n"
        # a clock six months ahead
        "app.send_task('lethe.sweep', args=['nightly-sweep', '2027-06-01T03:00:00+02:00'])\n"
        # a schedule beat does not have (it would be shown on the dashboard)
        f"app.send_task('lethe.sweep', args=['jean.dupont@example.org', {NOW!r}])\n"
    )
    log = embedded.logs[-1]
    wait_for(lambda: log.read_text().count("ALERT sweep") >= 3, 60, "3 refusals", embedded.logs)
    assert _audited(shop) == audited
    assert shop.store("select count(*) from purge_runs")[0][0] == runs + 1  # the dry run
    assert "jean.dupont" not in log.read_text()


def test_dead_letters_go_after_30_days_and_a_replay_does_not_restart_their_clock(
    embedded: Lethe, request
):
    import pendulum

    from worker.store.schema import DeadLetter
    from worker.store.sessions import transaction

    shop = _ready(embedded, request, people=80)
    embedded.start_worker()
    refused = [
        {
            "id": f"bad-{n}",
            "type": "parcel.lost",
            "subject": "customer:1",
            "occurred_at": "2026-01-01T10:00:00+01:00",
        }
        for n in (1, 2)
    ]
    embedded.python(
        f"from worker.app import app\napp.send_task('lethe.ingest', args=[{refused!r}])\n"
    )
    url = store_url(embedded)

    def letters() -> dict[str, int]:
        """Age in days of each dead letter, by event id."""
        with transaction(url) as session:
            now = pendulum.now("UTC")
            return {
                letter.event_id: (now - letter.received_at).days
                for letter in session.scalars(sa.select(DeadLetter))
            }

    wait_for(lambda: len(letters()) == 2, 30, "2 dead letters", embedded.logs)
    with transaction(url) as session:
        for event_id, days in (("bad-1", 40), ("bad-2", 10)):
            session.execute(
                sa.update(DeadLetter)
                .where(DeadLetter.event_id == event_id)
                .values(received_at=pendulum.now("UTC").subtract(days=days))
            )
    embedded.run("dead-letters", "--replay")  # refused again: the register has no such type
    assert letters() == {"bad-1": 40, "bad-2": 10}
    shop.purge("--now", NOW)
    assert letters() == {"bad-2": 10}


def test_an_old_event_arriving_after_its_data_was_erased_keeps_no_payload(embedded: Lethe, request):
    shop = _ready(embedded, request, people=80)
    erased = sorted(
        s
        for (s, a), r in shop.lifecycles().items()
        if a == "website.navigation" and r["state"] == "erased"
    )
    assert erased, "the first sweep should have erased some navigation"
    late = {
        "id": "late-visit",
        "type": "visit.recorded",
        "subject": erased[0],
        "occurred_at": "2014-01-02T10:00:00+01:00",
        "data": {"page": "/compte/arthur-75008"},
    }
    embedded.start_worker()
    embedded.python(
        f"from worker.app import app\napp.send_task('lethe.ingest', args=[[{late!r}]])\n"
    )
    embedded.wait_stored(len(shop.data.events) + 1)
    states = {a: r["state"] for (s, a), r in shop.lifecycles().items() if s == erased[0]}
    assert states["website.navigation"] == "erased"
    [(data,)] = shop.store("select data from events where id = 'late-visit'")
    assert "arthur" not in str(data)


def test_a_shop_that_is_down_leaves_everything_due_and_says_so(lethe: Lethe, request):
    shop = _ready(lethe, request, people=80)
    due = _due(shop)
    if lethe.embedded:
        lethe.env["LETHE_SHOP_DATABASE_URL"] = f"sqlite:///{lethe.home / 'gone.sqlite3'}"
        expected = "does not exist"
    else:
        lethe.env["LETHE_SHOP_DATABASE_URL"] = "postgresql+psycopg://postgres@127.0.0.1:1/shop"
        expected = "unreachable"
    down = shop.purge("--now", NOW, check=False)
    assert down["exit"] == 1
    assert expected in down["stderr"] and "LETHE_SHOP_DATABASE_URL" in down["stderr"]
    assert _due(shop) == due
    status, note = shop.store("select status, note from purge_runs order by id desc")[0]
    assert status == "failed" and expected in note

    lethe.env["LETHE_SHOP_DATABASE_URL"] = shop.url
    assert shop.purge("--now", NOW)["erased"] == len(due)


def test_beat_retries_a_sweep_whose_shop_was_down_and_the_same_run_erases_once_it_is_back(
    embedded: Lethe, request
):
    # docs/sweeps.md: a shop database that is down fails the attempt with an ALERT; every
    # lifecycle stays due and beat's task retries the same run (30 s, then doubling).
    shop = _ready(embedded, request, people=80)
    due = _due(shop)
    database = embedded.home / "var" / "shop.sqlite3"
    away = embedded.home / "shop-away.sqlite3"
    database.rename(away)
    embedded.start_worker()
    embedded.python(
        "from worker.app import app\n"
        f"app.send_task('lethe.sweep', kwargs={{'schedule': 'nightly-sweep', 'now': {NOW!r}}})\n"
    )

    def runs() -> list[tuple]:
        return shop.store(
            "select id, status, note, erased from purge_runs where schedule = 'nightly-sweep'"
        )

    wait_for(
        lambda: runs() and "attempt 1 failed, retrying in 30s" in (runs()[0][2] or ""),
        60,
        "the first attempt to fail",
        embedded.logs,
    )
    assert "ALERT shop database unreachable" in embedded.logs[-1].read_text()
    assert _due(shop) == due and runs()[0][1] == "running"
    away.rename(database)
    wait_for(lambda: runs()[0][1] == "done", 90, "the retry", embedded.logs)
    [(_, _, _, erased)] = runs()
    assert erased == len(due) and _due(shop) == set()
    assert set(one_row_per_erasure(shop.audit()).values()) == {1}


def test_targets_that_do_not_fit_the_shop_are_refused_with_the_register_line(
    embedded: Lethe, request, tmp_path
):
    shop = make_shop(embedded, request, people=40)
    register = copy_register(tmp_path)
    text = register.read_text()
    register.write_text(text.replace("birth_date: year", "birthdate: year", 1))
    line = register.read_text().splitlines().index("              birthdate: year") + 1
    embedded.env["LETHE_REGISTER"] = str(register)
    result = embedded.run("shop", "check", check=False)
    assert result.returncode == 1
    where = f"{register}:{line}: activity 'crm.customers', target 'customers': "
    assert where + "table 'customers' has no column 'birthdate'" in result.stderr
    # every command that reads the shop through the targets stops on it the same way
    commands = (
        ["shop", "coverage"],
        ["access", "customer:1"],
        ["anonymity"],
        ["purge", "--reapply"],
        ["purge", "--now", NOW],
    )
    for command in commands:
        result = embedded.run(*command, check=False)
        assert result.returncode == 1, (command, result.stderr)
        assert where + "table 'customers' has no column 'birthdate'" in result.stderr, command
        last = result.stderr.strip().splitlines()[-1]
        assert last == "Error: the register's targets do not fit the shop schema", command

    register.write_text(text.replace("email: random_email", "email: null", 1))
    line = text[: text.index("email: random_email")].count("\n") + 1
    result = embedded.run("shop", "check", check=False)
    assert f"{register}:{line}:" in result.stderr and "is NOT NULL" in result.stderr
    seed_store(embedded, shop.data.events)
    assert shop.purge("--now", NOW, check=False)["exit"] == 1

    # a table named with its schema: only the connection's schema is read, so say how
    register.write_text(text.replace("- table: customers", "- table: crm.customers", 1))
    result = embedded.run("shop", "check", check=False)
    assert "has no table 'crm.customers'" in result.stderr
    assert "set the schema in LETHE_SHOP_DATABASE_URL" in result.stderr


def test_a_held_subject_is_untouched_until_the_hold_is_lifted(distributed: Lethe, request):
    lethe = distributed
    shop = _ready(lethe, request, people=80)
    subject = next(s for s, a in sorted(_due(shop)) if a == "crm.customers")
    lethe.run("hold", "place", subject, "--reason", "case LIT-2026-3")
    rows = shop.lifecycles()
    assert {r["state"] for (s, _), r in rows.items() if s == subject} <= {"held", "erased"}
    shop.purge("--now", NOW)
    cid = int(subject.split(":")[1])
    assert shop.rows("customers")[cid]["email"] == shop.data.emails[subject]
    assert json.loads(lethe.run("audit", "--subject", subject, "--format", "json").stdout) == []

    lethe.run("hold", "lift", subject, "--reason", "case closed")
    shop.purge("--now", NOW)
    assert shop.rows("customers")[cid]["email"].endswith("@erased.invalid")
    trail = json.loads(lethe.run("audit", "--subject", subject, "--format", "json").stdout)
    assert {r["activity"] for r in trail} >= {"crm.customers"}


def test_a_lifecycle_left_active_under_an_open_hold_is_not_erased(lethe: Lethe, request):
    # However a lifecycle came to be active under an open hold (before holds took the
    # subject's lock, an ingestion racing `hold place` wrote it back so), the sweep's claim
    # reads the holds itself.
    shop = _ready(lethe, request, people=80)
    subject = next(s for s, a in sorted(_due(shop)) if a == "crm.customers")
    lethe.run("hold", "place", subject, "--reason", "case LIT-2026-9")
    engine = sa.create_engine(store_url(lethe))
    with engine.begin() as connection:
        raced = connection.execute(
            sa.text("UPDATE lifecycles SET state = 'active' WHERE subject = :s AND state = 'held'"),
            {"s": subject},
        ).rowcount
    engine.dispose()
    assert raced > 0 and subject in {s for s, _ in _due(shop)}
    swept = shop.purge("--now", NOW)
    assert swept["status"] == "done" and swept["erased"] > 0
    cid = int(subject.split(":")[1])
    assert shop.rows("customers")[cid]["email"] == shop.data.emails[subject]
    assert json.loads(lethe.run("audit", "--subject", subject, "--format", "json").stdout) == []


@pytest.mark.parametrize("command", ["place", "lift"])
def test_placing_or_lifting_a_hold_waits_for_an_ingestion_of_that_subject(
    distributed: Lethe, request, command: str
):
    # An ingestion holds the subject's lock from reading the holds to writing the
    # lifecycles; a hold placed (or lifted) meanwhile would be overwritten by its write.
    shop = _ready(distributed, request, people=80)
    subject = next(s for s, a in sorted(_due(shop)) if a == "crm.customers")
    if command == "lift":
        distributed.run("hold", "place", subject, "--reason", "case LIT-2026-4")
    engine = sa.create_engine(store_url(distributed))
    with engine.begin() as ingestion:
        ingestion.execute(
            sa.text("SELECT pg_advisory_xact_lock(hashtextextended(:s, 0))"), {"s": subject}
        )
        hold = subprocess.Popen(
            [LETHE, "hold", command, subject, "--reason", "case LIT-2026-4"],
            env=distributed.env,
            cwd=distributed.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        with pytest.raises(subprocess.TimeoutExpired):
            hold.wait(timeout=3)  # waits for the ingestion's commit
    engine.dispose()
    assert hold.wait(timeout=30) == 0, hold.communicate()[1]
    states = {r["state"] for (s, _), r in shop.lifecycles().items() if s == subject}
    assert ("held" in states) == (command == "place"), states


def test_a_hold_placed_before_any_event_covers_the_lifecycles_the_events_open(
    lethe: Lethe, request
):
    # docs/sweeps.md: a hold may precede events; it covers the subject's lifecycles once they exist
    from datetime import datetime

    from worker.demo.shop import metadata

    shop = _ready(lethe, request, people=80)
    subject, address = "customer:900001", "jeanne.held@example.org"
    with shop.engine().begin() as connection:
        connection.execute(
            metadata.tables["customers"].insert(),
            {
                "id": 900_001,
                "email": address,
                "first_name": "Jeanne",
                "last_name": "Martin",
                "created_at": datetime(2019, 1, 5, 10, 0),
            },
        )
    placed = lethe.run("hold", "place", subject, "--reason", "case LIT-2026-5")
    assert "this subject has no lifecycle yet" in placed.stderr
    lethe.start_worker()
    lethe.python(
        "from worker.client import emit\n"
        f"emit('order.closed', subject={subject!r}, id='held-order',"
        " occurred_at='2019-02-01T10:00:00+01:00')\n"
    )
    lethe.wait_event("held-order")
    wait_for(
        lambda: any(s == subject for s, _ in shop.lifecycles()), 30, "its lifecycles", lethe.logs
    )
    states = {a: r["state"] for (s, a), r in shop.lifecycles().items() if s == subject}
    assert states and set(states.values()) == {"held"}, states  # due since 2024 otherwise
    assert shop.purge("--now", NOW)["status"] == "done"
    assert shop.rows("customers")[900_001]["email"] == address
    assert json.loads(lethe.run("audit", "--subject", subject, "--format", "json").stdout) == []

    lethe.run("hold", "lift", subject, "--reason", "case closed")
    shop.purge("--now", NOW)
    assert shop.rows("customers")[900_001]["email"].endswith("@erased.invalid")


def _erasure_requested_then_swept(shop: Shop, subject: str) -> None:
    """The person asks for erasure (art. 17) on 20 November; the worker stores it; a sweep."""
    shop.lethe.python(
        "from worker.client import emit\n"
        f"emit('erasure.requested', subject={subject!r}, id='ask-1',"
        " occurred_at='2026-11-20T10:00:00+01:00')\n"
    )
    shop.lethe.start_worker()
    shop.lethe.wait_stored(len(shop.data.events) + 1)
    shop.purge("--now", NOW)


def test_an_erasure_request_erases_all_but_what_the_law_keeps_with_a_proof(
    embedded: Lethe, request
):
    shop = _ready(embedded, request, people=80)
    subject = "customer:1"
    email = shop.data.emails[subject]
    _erasure_requested_then_swept(shop, subject)
    states = {a: r["state"] for (s, a), r in shop.lifecycles().items() if s == subject}
    assert states.pop("crm.invoices") == "active"  # kept 10 years by law (art. 17(3)(b))
    assert set(states.values()) == {"erased"}
    assert shop.rows("customers")[1]["email"].endswith("@erased.invalid")
    invoices = [r for r in shop.rows("invoices").values() if r["customer_id"] == 1]
    assert invoices and all(r["billing_name"] and r["customer_email"] is None for r in invoices)
    proof = json.loads(embedded.run("audit", "--subject", subject, "--proof").stdout)
    assert proof["erasure_requested_at"] == ["2026-11-20T10:00:00+01:00"]
    assert proof["erased_activities"] == sorted(states)
    assert [k["activity"] for k in proof["not_yet_erased"]] == ["crm.invoices"]
    # what the law keeps, and why: the invoices' legal mentions, for 10 years
    [kept] = proof["kept_by_law"]
    assert (kept["activity"], kept["target"]) == ("crm.customers", "invoices[customer]")
    assert kept["columns"].split(",") == LEGAL
    assert "L123-22" in kept["why"] and email not in json.dumps(proof)
    csv = embedded.run("audit", "--subject", subject, "--format", "csv").stdout
    assert "erasure.requested (GDPR art. 17)" in csv and email not in csv


def test_a_visit_after_an_erasure_request_does_not_save_the_logs_and_later_ones_start_anew(
    lethe: Lethe, request
):

    from worker.demo.shop import metadata

    shop = _ready(lethe, request, people=80)
    visitor = "visitor:v-9001"
    logs = metadata.tables["navigation_logs"]

    def visit(event_id: str, when: str) -> None:
        with shop.engine().begin() as connection:
            connection.execute(
                logs.insert().values(
                    id=900_000 + int(event_id.removeprefix("v-")),
                    subject=visitor,
                    visited_at=sa.func.now(),
                    ip="198.51.100.7",
                    user_agent="Firefox",
                    path="/",
                )
            )
        lethe.python(
            "from worker.client import emit\n"
            f"emit('visit.recorded', subject={visitor!r}, id={event_id!r}, occurred_at={when!r})\n"
        )

    def own_logs() -> int:
        return sum(1 for r in shop.rows("navigation_logs").values() if r["subject"] == visitor)

    visit("v-1", "2026-06-01T10:00:00+02:00")
    lethe.python(
        "from worker.client import emit\n"
        f"emit('erasure.requested', subject={visitor!r}, id='ask-9001',"
        " occurred_at='2026-11-20T10:00:00+01:00')\n"
    )
    visit("v-2", "2026-11-20T15:00:00+01:00")  # browsing again the same afternoon
    lethe.start_worker()
    lethe.wait_stored(len(shop.data.events) + 3)
    shop.purge("--now", NOW)
    assert own_logs() == 0
    assert shop.lifecycles()[(visitor, "website.navigation")]["state"] == "erased"

    # A visit after the erasure is new data: 13 months of its own, and nothing
    # erased again before then.
    visit("v-3", "2026-11-26T10:00:00+01:00")
    lethe.wait_event("v-3")
    wait_for(
        lambda: shop.lifecycles()[(visitor, "website.navigation")]["state"] == "active",
        30,
        "the new visit's lifecycle",
        lethe.logs,
    )
    navigation = shop.lifecycles()[(visitor, "website.navigation")]
    assert navigation["deadline_at"] == "2027-12-26T10:00:00+01:00"
    shop.purge("--now", "2026-11-26T12:00:00+01:00")
    assert own_logs() == 1

    # The proof still tells the person their logs were erased; the new visit is apart.
    proof = json.loads(lethe.run("audit", "--subject", visitor, "--proof").stdout)
    assert "website.navigation" in proof["erased_activities"]
    [new] = [p for p in proof["not_yet_erased"] if p["activity"] == "website.navigation"]
    assert new["gathered_after_erasure_of"] == "2026-11-26T03:00:00+01:00"
    assert new["until"] == "2027-12-26T10:00:00+01:00"

    # A late event about the erased months keeps no payload, new lifecycle or not.
    lethe.python(
        "from worker.client import emit\n"
        f"emit('visit.recorded', subject={visitor!r}, id='v-late',"
        " occurred_at='2026-10-01T10:00:00+02:00', data={'page': '/panier'})\n"
    )
    lethe.wait_event("v-late")
    [(data,)] = shop.store("SELECT data FROM events WHERE id = 'v-late'")
    assert (json.loads(data) if isinstance(data, str) else data) == {}


def _refuse_to_touch(shop: Shop, subject: str) -> None:
    """The shop refuses to update this one customer's row, as a constraint would."""
    customer = int(subject.split(":")[1])
    engine = shop.engine()
    with engine.begin() as connection:
        if shop.lethe.embedded:
            connection.exec_driver_sql(
                f"CREATE TRIGGER keep_customer BEFORE UPDATE ON customers WHEN OLD.id = "
                f"{customer} BEGIN SELECT RAISE(ABORT, 'customer is locked'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'customer is locked'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER keep_customer BEFORE UPDATE ON customers FOR EACH ROW "
                f"WHEN (OLD.id = {customer}) EXECUTE FUNCTION refuse()"
            )
    engine.dispose()


def _touch_again(shop: Shop) -> None:
    engine = shop.engine()
    with engine.begin() as connection:
        on = "" if shop.lethe.embedded else " ON customers"
        connection.exec_driver_sql(f"DROP TRIGGER keep_customer{on}")
    engine.dispose()


def _check_customers(shop: Shop, name: str, condition: str) -> None:
    """The shop adds a CHECK constraint to customers. SQLite cannot add one to a table:
    the table is built again with it, as SQLite's own ALTER TABLE page does."""
    from worker.demo.shop import metadata

    engine = shop.engine()
    with engine.begin() as connection:
        if not shop.lethe.embedded:
            connection.execute(
                sa.text(f"ALTER TABLE customers ADD CONSTRAINT {name} CHECK ({condition})")
            )
        else:
            checked = metadata.tables["customers"].to_metadata(sa.MetaData(), name="new")
            checked.append_constraint(sa.CheckConstraint(condition, name=name))
            checked.create(connection)
            connection.exec_driver_sql("INSERT INTO new SELECT * FROM customers")
            connection.exec_driver_sql("DROP TABLE customers")
            connection.exec_driver_sql("ALTER TABLE new RENAME TO customers")
    engine.dispose()


def test_a_failed_erasure_names_the_shop_constraint_that_refused_it_and_nothing_of_the_person(
    lethe: Lethe, request
):
    shop = _ready(lethe, request, people=80)
    due = _due(shop)
    subject = min(s for s, a in due if a == "crm.customers")
    customer = int(subject.split(":")[1])
    person = shop.rows("customers")[customer]
    # A rule of the shop's that the register cannot know: this customer keeps an address.
    _check_customers(shop, "email_deliverable", f"id <> {customer} OR email NOT LIKE '%.invalid'")
    # As if erased once before and back since: the claim sets the run's time, and the
    # failed erasure must put this one back.
    before = datetime(2021, 3, 4, 5, 6, 7, tzinfo=UTC)
    _erased_at(lethe, subject, "crm.customers", before)

    swept = shop.purge_approved(NOW)
    assert (swept["status"], swept["erased"], swept["failed"]) == ("done", len(due) - 1, 1)
    assert _due(shop) == {(subject, "crm.customers")}
    assert _erased_at(lethe, subject, "crm.customers") == before
    other = min(s for s, a in due if a == "crm.customers" and s != subject)
    assert _erased_at(lethe, other, "crm.customers") == datetime.fromisoformat(NOW)
    customers = shop.rows("customers")
    assert customers[customer] == person
    others = [int(s.split(":")[1]) for s, a in due if a == "crm.customers" and s != subject]
    assert others and all(customers[c]["email"].endswith("@erased.invalid") for c in others)

    # SQLite names the constraint alone; PostgreSQL's diagnostics name its table too
    refused = "IntegrityError: CHECK constraint email_deliverable"
    refused += "" if lethe.embedded else " on customers"
    failed = [r for r in shop.audit() if r["outcome"] == "failed"]
    trail = json.loads(lethe.run("audit", "--subject", subject, "--format", "json").stdout)
    assert failed == [r for r in trail if r["outcome"] == "failed"]
    assert [(r["target"], r["strategy"].split(" (failed: ")[1]) for r in failed] == [
        ("customers", f"{refused})"),
        ("invoices[customer]", f"{refused})"),
    ]  # before: "(failed: IntegrityError)", which named no constraint to fix
    shown = lethe.run("audit").stdout
    assert f"(failed: {refused})" in shown
    status = lethe.run("status", check=False).stdout
    assert f"{len(due) - 1} erased, 1 failed: `lethe audit --run {swept['run']}`" in status
    for said in (shown, lethe.run("audit", "--format", "json").stdout, status):
        assert not any(person[c] in said for c in ("email", "first_name", "last_name"))


def test_a_trigger_that_names_the_person_as_its_constraint_is_audited_by_type_alone(
    lethe: Lethe, request
):
    # A trigger may word its refusal as a constraint's and put anything in it: never audited.
    shop = _ready(lethe, request, people=80)
    customers = shop.rows("customers")
    customer, name = next(
        (c, customers[c]["last_name"])
        for c in sorted(int(s.split(":")[1]) for s, a in _due(shop) if a == "crm.customers")
        if customers[c]["last_name"].isascii() and customers[c]["last_name"].isalpha()
    )
    engine = shop.engine()
    with engine.begin() as connection:
        if lethe.embedded:
            connection.exec_driver_sql(
                f"CREATE TRIGGER keep_customer BEFORE UPDATE ON customers WHEN OLD.id = "
                f"{customer} BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {name}'); END"
            )
        else:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "RAISE EXCEPTION USING ERRCODE = 'check_violation', CONSTRAINT = OLD.last_name, "
                "MESSAGE = 'refused'; END $$"
            )
            connection.exec_driver_sql(
                "CREATE TRIGGER keep_customer BEFORE UPDATE ON customers FOR EACH ROW "
                f"WHEN (OLD.id = {customer}) EXECUTE FUNCTION refuse()"
            )
    engine.dispose()

    assert shop.purge_approved(NOW)["failed"] == 1
    failed = [r["strategy"] for r in shop.audit() if r["outcome"] == "failed"]
    assert failed and all(s.endswith(" (failed: IntegrityError)") for s in failed), failed
    assert name not in lethe.run("audit", "--format", "json").stdout


def test_a_proof_tells_a_person_whose_erasure_failed_that_it_is_overdue_and_was_tried(
    embedded: Lethe, request
):
    shop = _ready(embedded, request, people=80)
    subject = "customer:1"
    _refuse_to_touch(shop, subject)
    _erasure_requested_then_swept(shop, subject)

    proof = json.loads(embedded.run("audit", "--subject", subject, "--proof").stdout)
    pending = {p["activity"]: p for p in proof["not_yet_erased"]}
    assert "crm.customers" not in proof["erased_activities"]
    assert pending["crm.customers"]["state"] == "due"
    assert pending["crm.customers"]["failed_attempts"] == 1
    assert pending["crm.customers"]["last_failed_at"].startswith("2026-")
    assert pending["crm.invoices"]["state"] == "active"
    assert "failed_attempts" not in pending["crm.invoices"]


def test_no_part_of_a_run_tries_again_what_the_run_failed_to_erase_and_the_next_run_does(
    lethe: Lethe, request
):
    shop = _ready(lethe, request, people=80)
    due = _due(shop)
    subject = min(s for s, a in due if a == "crm.customers")
    _refuse_to_touch(shop, subject)
    # One worker process: the second part starts once the first has finished, from the
    # oldest deadline again (a part waiting behind other work in the queue does too).
    lethe.env.update({"LETHE_SWEEP_PARTS": "2", "LETHE_SWEEP_BATCH": "5"})
    lethe.start_worker("--concurrency=1")
    lethe.python(
        "from worker.app import app\n"
        f"app.send_task('lethe.sweep', kwargs={{'schedule': 'nightly-sweep', 'now': {NOW!r}}})\n"
    )

    def run() -> tuple:
        query = "select id, status, parts_done, erased, failed from purge_runs where schedule = "
        return (shop.store(query + "'nightly-sweep'") or [(None, None)])[0]

    wait_for(lambda: run()[1] == "done", 60, "the sweep's two parts", lethe.logs)
    run_id, _, parts_done, erased, failed = run()
    assert (parts_done, erased, failed) == (2, len(due) - 1, 1)  # before: failed twice

    def trail() -> list[tuple]:
        rows = json.loads(lethe.run("audit", "--subject", subject, "--format", "json").stdout)
        return [
            (r["run_id"], r["target"], r["outcome"])
            for r in rows
            if r["activity"] == "crm.customers" and r["run_id"] >= run_id
        ]

    assert trail() == [
        (run_id, "customers", "failed"),
        (run_id, "invoices[customer]", "failed"),
    ]
    assert _due(shop) == {(subject, "crm.customers")}

    _touch_again(shop)
    lethe.kill_workers()
    after = shop.purge("--now", NOW)
    assert (after["status"], after["erased"], after["failed"]) == ("done", 1, 0)
    assert [(r, o) for r, t, o in trail() if t == "customers"] == [
        (run_id, "failed"),
        (after["run"], "erased"),
    ]
    assert _due(shop) == set()


def test_unsubscribing_deletes_the_subscriber_and_keeps_a_keyed_hash_for_the_shop(
    embedded: Lethe, request
):
    shop = _ready(embedded, request, people=80)
    shop.purge("--now", NOW)
    subscribers = {r["subject"]: r["email"] for r in shop.data.rows["newsletter_subscribers"]}
    still = {r["subject"]: r["email"] for r in shop.rows("newsletter_subscribers").values()}
    gone = [email for subject, email in subscribers.items() if subject not in still]
    left = {s for s, a in shop.due() if a == "newsletter"}
    assert gone and not left, "every unsubscribed address should be gone"
    out = embedded.python(
        "from worker.client import is_suppressed\n"
        f"print([is_suppressed(a.upper()) for a in {gone[:3]!r}],"
        f" is_suppressed({next(iter(still.values()))!r}))\n"
    ).stdout
    assert out.strip() == f"{[True] * len(gone[:3])} False"
    assert not any(a in str(shop.store("select * from suppression")) for a in gone)


def test_a_sweep_far_larger_than_usual_waits_for_approval(embedded: Lethe, request):
    embedded.env["LETHE_SWEEP_ALARM_FLOOR"] = "20"
    shop = _ready(embedded, request, people=300)
    for night in (
        "2019-01-02T03:00:00+01:00",
        "2019-01-03T03:00:00+01:00",
        "2019-01-04T03:00:00+01:00",
    ):
        assert shop.purge("--now", night)["status"] == "done"
    before = shop.rows("customers")
    stopped = shop.purge("--now", NOW)
    assert stopped["exit"] == 4
    assert "more than 10 x the median of the last" in stopped["stderr"]
    assert shop.rows("customers") == before
    dry = shop.purge("--dry-run", "--now", NOW)
    assert dry["status"] == "dry_run" and any(
        r["target"] == "customers" for r in dry["would_change"]
    )
    assert shop.rows("customers") == before
    approved = shop.purge("--approve", str(stopped["run"]))
    assert approved["status"] == "done" and approved["erased"] == stopped["due"]


def test_an_approval_is_for_one_stopped_run_and_the_register_it_was_planned_with(
    embedded: Lethe, request, tmp_path
):
    # docs/sweeps.md: a sweep stops for approval when it is the first with a new or changed
    # register (approval is per register content); `--approve RUN` lets a stopped run go on
    shop = _ready(embedded, request, people=80)  # the shipped register is approved
    register = copy_register(tmp_path)
    shipped = register.read_text()
    changed = shipped.replace("keep: 13 months", "keep: 12 months", 1)
    assert changed != shipped
    register.write_text(changed)
    embedded.env["LETHE_REGISTER"] = str(register)
    before = shop.rows("customers")

    stopped = shop.purge("--now", NOW)
    assert stopped["exit"] == 4 and "first sweep with this register" in stopped["stderr"]
    run = str(stopped["run"])
    register.write_text(changed.replace("keep: 3 years", "keep: 4 years", 1))
    refused = shop.purge("--approve", run, check=False)
    assert refused["exit"] == 1 and f"the register changed since run {run}" in refused["stderr"]
    assert shop.rows("customers") == before

    register.write_text(changed)  # the register the run was planned with
    done = shop.purge("--approve", run)
    assert (done["status"], done["erased"]) == ("done", stopped["due"])
    again = shop.purge("--approve", run, check=False)
    assert again["exit"] == 1 and "only a run awaiting approval can be approved" in again["stderr"]
    runs = shop.store(f"select status, erased from purge_runs where id = {run}")
    assert runs == [("done", stopped["due"])]


def test_a_dry_run_counts_the_rows_the_sweep_then_changes(lethe: Lethe, request):
    shop = _ready(lethe, request)
    # pages of 7 due lifecycles: the counts add up across pages
    lethe.env["LETHE_SWEEP_BATCH"] = "7"
    before = shop.rows("customers")
    dry = shop.purge("--dry-run", "--now", NOW)
    assert dry["status"] == "dry_run"
    assert shop.rows("customers") == before
    would = {(r["activity"], r["target"]): r["rows"] for r in dry["would_change"]}
    known = {r["id"] for r in shop.audit()}
    done = shop.purge_approved(NOW)
    assert done["status"] == "done"
    changed: dict[tuple[str, str], int] = {}
    for row in shop.audit():
        if row["id"] not in known and row["outcome"] in ("erased", "nothing_to_erase"):
            key = (row["activity"], row["target"])
            changed[key] = changed.get(key, 0) + row["rows"]
    assert would == changed
    assert sum(would.values()) == done["rows"] > 7


def test_a_visit_stored_while_a_sweep_erases_the_visitor_gets_a_deadline_of_its_own(
    distributed: Lethe, request
):
    # The sweep's claim is held open (a shop row it must delete is locked) while the
    # new visit is ingested: ingestion must read the erasure once the sweep commits.
    import threading

    import pendulum

    from worker.demo.shop import metadata
    from worker.domain.register_file import load_register
    from worker.pipeline.ingest import ingest
    from worker.settings import load_settings
    from worker.store.sessions import make_engine, now_utc

    shop = _ready(distributed, request, people=80)
    visitor = "visitor:v-race"
    with shop.engine().begin() as connection:
        connection.execute(
            metadata.tables["navigation_logs"]
            .insert()
            .values(id=990_001, subject=visitor, visited_at=sa.func.now(), ip="x", path="/")
        )
    seed_store(
        distributed,
        [
            {
                "id": "v-1",
                "type": "visit.recorded",
                "subject": visitor,
                "occurred_at": "2026-06-01T10:00:00+02:00",
            },
            {
                "id": "ask",
                "type": "erasure.requested",
                "subject": visitor,
                "occurred_at": "2026-11-20T10:00:00+01:00",
            },
        ],
    )
    shop_engine, store = shop.engine(), sa.create_engine(store_url(distributed))
    blocker = shop_engine.connect()
    blocking = blocker.begin()
    blocker.execute(sa.text("SELECT id FROM navigation_logs WHERE id = 990001 FOR UPDATE"))
    purge = subprocess.Popen(
        [LETHE, "purge", "--format", "json", "--now", NOW],
        env=distributed.env,
        cwd=distributed.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(lambda: lock_waits(shop_engine) > 0, 60, "the sweep to wait on the shop", [])
        settings = load_settings(distributed.env)
        visit = {
            "id": "v-2",
            "type": "visit.recorded",
            "subject": visitor,
            "occurred_at": pendulum.now("UTC").isoformat(),
        }

        def ingest_visit() -> None:
            engine = make_engine(settings.database_url)
            with sa.orm.Session(engine) as session, session.begin():
                ingest(session, [visit], load_register(settings.register_path), now_utc())
            engine.dispose()

        ingesting = threading.Thread(target=ingest_visit)
        ingesting.start()
        wait_for(lambda: lock_waits(store) > 0, 30, "the visit to wait on the claim", [])
    finally:
        blocking.rollback()
        blocker.close()
    _, err = purge.communicate(timeout=120)
    ingesting.join(timeout=60)
    assert purge.returncode == 0, err.decode()
    with store.connect() as connection:
        state, deadline = connection.execute(
            sa.text(
                "SELECT state, deadline_at FROM lifecycles "
                "WHERE subject = :s AND activity = 'website.navigation'"
            ),
            {"s": visitor},
        ).one()
    store.dispose()
    shop_engine.dispose()
    assert not ingesting.is_alive()
    assert state == "active"  # before: erased for good, the new visit with no deadline
    assert deadline > pendulum.now("UTC").add(months=12)
