"""Only the person's own contact renews a clock: through a real worker on the embedded
default and on Redis + PostgreSQL, the stored deadlines are the CNIL's, a contact without
its direction is refused by the client and dead-lettered by the worker, and contacts an
earlier release stored without a direction count as inbound."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from harness import ROOT, Lethe, wait_for

STORIES = ROOT / "samples" / "contact-direction.jsonl"


def _deadline(lethe: Lethe, subject: str, activity: str) -> dict:
    rows = json.loads(lethe.run("deadlines", "--subject", subject, "--format", "json").stdout)
    found = [r for r in rows if r["activity"] == activity]
    assert len(found) == 1, rows
    return found[0]


def _store_engine(lethe: Lethe) -> sa.Engine:
    return sa.create_engine(
        lethe.env.get("LETHE_DATABASE_URL") or f"sqlite:///{lethe.home / 'var' / 'lethe.sqlite3'}"
    )


def test_the_two_stories_give_the_cnil_deadlines(lethe: Lethe):
    lethe.start_worker()
    result = lethe.run("emit", "--file", str(STORIES))
    assert "sent 6, refused 0" in result.stderr
    lethe.wait_stored(6)
    wait_for(lambda: lethe.deadlines() == lethe.simulate(STORIES), 30, "the stories' lifecycles")
    # a prospect who wrote in February 2023, called by the shop in June 2025
    prospect = _deadline(lethe, "prospect:p-3001", "website.prospects")
    assert prospect["deadline_at"].startswith("2026-02-14T10:00:00")
    # a customer whose last order was in March 2020, e-mailed by the shop in January 2024
    for activity in ("crm.customers", "website.accounts"):
        customer = _deadline(lethe, "customer:3002", activity)
        assert customer["deadline_at"].startswith("2025-03-10T11:00:00"), activity
    # the customer who wrote back in January 2024 renewed the relationship
    assert _deadline(lethe, "customer:3003", "crm.customers")["deadline_at"].startswith(
        "2029-01-22T09:00:00"
    )


def test_a_contact_without_direction_is_refused_by_the_client_and_dead_lettered(lethe: Lethe):
    lethe.start_worker()
    refused = lethe.python(
        "from worker.client import EventInvalid, emit, emit_many\n"
        "try:\n"
        "    emit('contact.made', subject='prospect:p-9', id='no-way')\n"
        "except EventInvalid as exc:\n"
        "    print('emit:', exc)\n"
        "report = emit_many([\n"
        "    {'type': 'contact.made', 'subject': 'prospect:p-9', 'id': 'sideways',\n"
        "     'data': {'direction': 'both ways'}},\n"
        "    {'type': 'contact.made', 'subject': 'prospect:p-9', 'id': 'inbound-1',\n"
        "     'occurred_at': '2025-06-12T15:00:00+02:00', 'data': {'direction': 'inbound'}},\n"
        "])\n"
        "print('emit_many:', report.sent, report.refused)\n"
    ).stdout
    assert "emit: contact.made needs data.direction: send inbound" in refused
    assert "emit_many: 1 [(1, 'field data.direction of contact.made is not one of" in refused
    assert "both ways" not in refused
    lethe.wait_event("inbound-1")
    # refused before sending: the worker never saw them
    assert lethe.store_count("dead_letters") == 0
    assert lethe.store_count("events") == 1

    # a producer that publishes by task name, around the client: a dead letter with its reason
    raw = {
        "id": "by-task",
        "type": "contact.made",
        "subject": "prospect:p-9",
        "occurred_at": "2025-07-01T10:00:00+02:00",
        "data": {"channel": "phone"},
    }
    lethe.python(f"from worker.app import app\napp.send_task('lethe.ingest', args=[[{raw!r}]])\n")
    wait_for(lambda: lethe.store_count("dead_letters") == 1, 30, "1 dead letter", lethe.logs)
    letters = json.loads(lethe.run("dead-letters", "--format", "json").stdout)
    assert [x["event_id"] for x in letters] == ["by-task"]
    assert "contact.made needs data.direction" in letters[0]["reason"]
    assert lethe.store_count("events where id = 'by-task'") == 0
    # the inbound contact alone anchors the prospect's 3 years
    assert _deadline(lethe, "prospect:p-9", "website.prospects")["deadline_at"].startswith(
        "2028-06-12T15:00:00"
    )


@pytest.mark.parametrize("lethe", ["embedded", "distributed"], indirect=True)
def test_contacts_stored_without_a_direction_by_an_earlier_release_count_as_inbound(
    lethe: Lethe, tmp_path: Path
):
    from alembic import command

    from worker.store.migrate import alembic_config
    from worker.store.schema import StoredEvent

    (lethe.home / "var").mkdir(parents=True, exist_ok=True)  # the embedded store's folder
    engine = _store_engine(lethe)
    # the schema of the release before contact directions (and event summaries): the
    # distributed store comes already migrated to the head, so it is taken back down
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    command.upgrade(config, "0009")
    command.downgrade(config, "0009")
    # as the release before contact directions stored them: no direction in the data
    with engine.begin() as connection:
        connection.execute(
            sa.insert(StoredEvent.__table__),
            [
                {
                    "id": "old-1",
                    "type": "contact.made",
                    "subject": "prospect:p-4001",
                    "occurred_at": datetime(2023, 2, 14, 9, 0, tzinfo=UTC),
                    "data": {"channel": "form"},
                    "received_at": datetime(2023, 2, 14, 9, 0, 5, tzinfo=UTC),
                },
                {
                    "id": "old-2",
                    "type": "contact.made",
                    "subject": "prospect:p-4001",
                    "occurred_at": datetime(2024, 3, 1, 9, 0, tzinfo=UTC),
                    "data": {},
                    "received_at": datetime(2024, 3, 1, 9, 0, 5, tzinfo=UTC),
                },
            ],
        )
    engine.dispose()
    lethe.run("db", "upgrade")
    lethe.start_worker()
    # a new event about the same prospect: the worker recomputes from the stored log
    lethe.run(
        "emit",
        "contact.made",
        "--direction",
        "outbound",
        "--subject",
        "prospect:p-4001",
        "--id",
        "new-call",
        "--at",
        "2025-06-12T15:00:00+02:00",
    )
    lethe.wait_event("new-call")
    # the latest stored contact counts as inbound (never erased early): 2024-03-01 + 3 years
    wait_for(
        lambda: (
            _deadline(lethe, "prospect:p-4001", "website.prospects")["deadline_at"]
            == "2027-03-01T10:00:00+01:00"
        ),
        30,
        "the prospect's lifecycle",
        lethe.logs,
    )
    # and `lethe recompute` reads the stored log the same way: nothing moves
    dry = lethe.run("recompute", "--dry-run").stdout
    prospects = next(line for line in dry.splitlines() if line.startswith("website.prospects"))
    assert prospects.split()[1:] == ["0", "0", "1", "0", "0"], dry  # earlier later unchanged
    lethe.run("recompute")
    assert _deadline(lethe, "prospect:p-4001", "website.prospects")["deadline_at"] == (
        "2027-03-01T10:00:00+01:00"
    )
    # the same history sent today, with its directions, gives the same deadline
    today = tmp_path / "today.jsonl"
    today.write_text(
        "".join(
            json.dumps(
                {
                    "id": event_id,
                    "type": "contact.made",
                    "subject": "prospect:p-4001",
                    "occurred_at": at,
                    "data": {"direction": direction},
                }
            )
            + "\n"
            for event_id, at, direction in [
                ("old-1", "2023-02-14T09:00:00Z", "inbound"),
                ("old-2", "2024-03-01T09:00:00Z", "inbound"),
                ("new-call", "2025-06-12T15:00:00+02:00", "outbound"),
            ]
        )
    )
    assert lethe.deadlines() == lethe.simulate(today)
