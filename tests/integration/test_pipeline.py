"""The shop's events reach the store through a real broker and a real worker process,
and the stored deadlines are exactly those `lethe simulate` computes."""

from __future__ import annotations

import json
import random
import re
import signal
from pathlib import Path

import pytest
from harness import Lethe, copy_register, teach_loyalty_joined, wait_for

# The key tests run on RabbitMQ + PostgreSQL too, the broker ops may choose instead of Redis.
ON_EVERY_BROKER = pytest.mark.parametrize(
    "lethe", ["embedded", "distributed", "rabbitmq"], indirect=True
)


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def _unique_ids(path: Path) -> int:
    return len({json.loads(line)["id"] for line in _lines(path)})


def _waiting(lethe: Lethe) -> int | None:
    """The queue depth `lethe status` reports, if it reports one."""
    found = re.search(r"(\d+) message\(s\) waiting", lethe.run("status", check=False).stdout)
    return int(found.group(1)) if found else None


def test_emitted_file_gives_the_deadlines_simulate_computes(lethe: Lethe, samples: Path):
    lethe.start_worker()
    result = lethe.run("emit", "--file", str(samples))
    assert "sent 29, refused 0" in result.stderr
    lethe.wait_stored(_unique_ids(samples))
    wait_for(lambda: lethe.deadlines() == lethe.simulate(samples), 30, "all lifecycles")


@ON_EVERY_BROKER
def test_duplicates_and_out_of_order_events_change_nothing(lethe: Lethe, samples: Path, tmp_path):
    shuffled = _lines(samples)
    random.Random(7).shuffle(shuffled)
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join(shuffled + shuffled[:10]) + "\n")
    lethe.start_worker()
    lethe.run("emit", "--file", str(mixed))
    lethe.run("emit", "--file", str(samples))
    lethe.wait_stored(_unique_ids(samples))
    wait_for(lambda: lethe.deadlines() == lethe.simulate(samples), 30, "all lifecycles")
    assert lethe.store_count("events") == _unique_ids(samples)


@ON_EVERY_BROKER
def test_shop_code_emits_with_the_client_and_addresses_leave_only_as_hashes(lethe: Lethe):
    lethe.start_worker()
    lethe.python(
        "from worker.client import emit, emit_many\n"
        "emit('order.closed', subject='customer:9001', occurred_at='2024-03-31T02:30:00+02:00',"
        " id='shop-1', data={'order': 'B-1'})\n"
        "emit('newsletter.unsubscribed', subject='customer:9001', id='shop-2',"
        " occurred_at='2025-01-01T00:00:00+01:00', match={'email': 'Jeanne.Martin@example.org'})\n"
        "report = emit_many([{'id': f'shop-{i}', 'type': 'visit.recorded',"
        " 'subject': f'visitor:{i}', 'occurred_at': '2026-01-15T12:00:00Z'}"
        " for i in range(3, 603)])\n"
        "assert report.sent == 600, report\n"
    )
    refused = lethe.python(
        "from worker.client import emit, EventInvalid\n"
        "try:\n"
        "    emit('contact.made', subject='prospect:7',\n"
        "         data={'direction': 'inbound', 'from': 'jeanne@example.org'})\n"
        "except EventInvalid as exc:\n"
        "    print(exc)\n",
    )
    assert "data.from looks like an e-mail address" in refused.stdout
    lethe.wait_stored(602)
    rows = {(r["subject"], r["activity"]): r for r in lethe.deadlines()}
    # 02:30+02:00 is 00:30 UTC, 01:30 in Paris before that night's change to summer time
    assert rows[("customer:9001", "crm.customers")]["deadline_at"] == "2029-03-31T01:30:00+02:00"
    assert rows[("customer:9001", "newsletter")]["state"] == "due"
    assert rows[("visitor:602", "website.navigation")]["deadline_at"] == "2027-02-15T13:00:00+01:00"
    dump = lethe.run("deadlines", "--subject", "customer:9001", "--format", "json").stdout
    assert "Jeanne" not in dump and "jeanne" not in dump.lower()
    assert lethe.store_count("events where cast(data as text) like '%hmac-sha256-v2:%'") == 1
    assert lethe.store_count("events where lower(cast(data as text)) like '%jeanne%'") == 0


def test_an_unsubscription_sent_with_the_address_hash_suppresses_it_before_any_sweep(
    lethe: Lethe,
):
    # The shop may delete its subscriber row itself at once: the sweep then finds no
    # address to suppress, so the event's hash is the only trace (art. 21(3)).
    lethe.start_worker()
    lethe.python(
        "from worker.client import emit\n"
        "emit('newsletter.subscribed', subject='customer:77', id='n-1',"
        " match={'email': 'ines.roux@example.org'})\n"
        "emit('newsletter.subscribed', subject='customer:78', id='n-2',"
        " occurred_at='2025-01-01T00:00:00+01:00', match={'email': 'paul.blanc@example.org'})\n"
        "emit('newsletter.unsubscribed', subject='customer:78', id='n-3',"
        " match={'email': 'paul.blanc@example.org'})\n"
    )
    lethe.wait_stored(3)
    answers = lethe.python(
        "from worker.client import is_suppressed\n"
        "print([is_suppressed(a) for a in ('ines.roux@example.org', 'paul.blanc@example.org',"
        " ' Paul.Blanc@Example.org')])\n"
    )
    assert answers.stdout.strip() == "[False, True, True]"
    assert lethe.store_count("purge_runs") == 0


def test_refused_events_become_dead_letters_and_replay_after_a_register_fix(
    lethe: Lethe, tmp_path: Path
):
    lethe.start_worker()
    # A misbehaving producer skips the client's checks and publishes by task name.
    batch = [
        {
            "id": "ok-1",
            "type": "order.closed",
            "subject": "customer:1",
            "occurred_at": "2025-05-05T10:00:00+02:00",
        },
        {
            "id": "bad-type",
            "type": "loyalty.joined",
            "subject": "customer:1",
            "occurred_at": "2025-05-05T10:00:00+02:00",
        },
        {
            "id": "no-offset",
            "type": "order.closed",
            "subject": "customer:2",
            "occurred_at": "2025-05-05T10:00:00",
        },
        {
            "id": "no-kind",
            "type": "order.closed",
            "subject": "42",
            "occurred_at": "2025-05-05T10:00:00+02:00",
        },
        "{not json",
        {
            "id": "ok-2",
            "type": "visit.recorded",
            "subject": "visitor:3",
            "occurred_at": "2025-05-05T10:00:00+02:00",
        },
    ]
    lethe.python(f"from worker.app import app\napp.send_task('lethe.ingest', args=[{batch!r}])\n")
    wait_for(lambda: lethe.store_count("dead_letters") == 4, 30, "4 dead letters", lethe.logs)
    lethe.wait_stored(2)
    letters = json.loads(lethe.run("dead-letters", "--format", "json").stdout)
    reasons = {x["event_id"]: x["reason"] for x in letters}
    assert "unknown event type (" in reasons["bad-type"]
    assert "loyalty" not in reasons["bad-type"]
    assert "no UTC offset" in reasons["no-offset"]
    assert "subject must be KIND:ID" in reasons["no-kind"]
    assert "not valid JSON" in reasons[None]

    register = copy_register(tmp_path)
    teach_loyalty_joined(register)
    lethe.env["LETHE_REGISTER"] = str(register)
    replay = lethe.run("dead-letters", "--replay")
    assert "replayed 1, still refused 3" in replay.stderr
    assert lethe.store_count("dead_letters") == 3
    assert lethe.store_count("events where id = 'bad-type'") == 1


def test_a_producer_sending_one_event_or_text_where_a_list_belongs_loses_nothing(lethe: Lethe):
    lethe.start_worker()
    one = {
        "id": "alone-1",
        "type": "order.closed",
        "subject": "customer:5",
        "occurred_at": "2025-05-05T10:00:00+02:00",
    }
    lethe.python(
        "from worker.app import app\n"
        "app.send_task('lethe.ingest', args=['{not json'])\n"
        f"app.send_task('lethe.ingest', args=[{one!r}])\n"
        "app.send_task('lethe.ingest', args=[])\n"
        "app.send_task('lethe.ingest', kwargs={'who': 'Paul Martin'})\n"
        "app.send_task('lethe.ingest_one', args=[])\n"
    )
    wait_for(lambda: lethe.store_count("dead_letters") == 2, 30, "2 dead letters", lethe.logs)
    lethe.wait_stored(1)
    assert lethe.store_count("events where id = 'alone-1'") == 1
    assert "Paul Martin" not in "".join(log.read_text() for log in lethe.logs)
    lethe.run(
        "emit",
        "contact.made",
        "--direction",
        "outbound",
        "--subject",
        "customer:6",
        "--id",
        "after-1",
    )
    lethe.wait_stored(2)  # the worker went on
    assert lethe.store_count("dead_letters") == 2


def test_a_decimal_in_one_event_refuses_that_event_alone_not_its_batch(lethe: Lethe):
    # kombu's JSON carries a Decimal through to the worker as a Decimal
    lethe.start_worker()
    lethe.python(
        "from decimal import Decimal\n"
        "from worker.app import app\n"
        "batch = [{'id': f'dec-{i}', 'type': 'order.closed', 'subject': f'customer:{i}',"
        " 'occurred_at': '2026-01-01T10:00:00+01:00', 'data': {'amount': '12.5'}}"
        " for i in range(20)]\n"
        "batch[7]['data'] = {'amount': Decimal('12.5')}\n"
        "app.send_task('lethe.ingest', args=[batch])\n"
    )
    lethe.wait_stored(19)
    wait_for(lambda: lethe.store_count("dead_letters") == 1, 30, "1 dead letter", lethe.logs)
    assert lethe.store_count("events") == 19


def test_is_suppressed_works_in_processes_forked_after_using_it(distributed: Lethe):
    # gunicorn's workers fork from a parent that imported and used the client
    result = distributed.python(
        "import os\n"
        "from worker.client import is_suppressed\n"
        "assert not is_suppressed('x@example.org')\n"
        "children = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            for _ in range(200):\n"
        "                assert not is_suppressed('x@example.org')\n"
        "        except BaseException as exc:\n"
        "            print('child failed:', type(exc).__name__, flush=True)\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    children.append(pid)\n"
        "codes = [os.waitpid(pid, 0)[1] for pid in children]\n"
        "assert not is_suppressed('x@example.org')\n"
        "print(codes)\n"
    )
    assert result.stdout.strip().splitlines()[-1] == "[0, 0, 0, 0]", result.stdout


@pytest.mark.parametrize(
    "down, shown",
    [
        ("redis://127.0.0.1:1/0", "redis://127.0.0.1:1/0"),
        ("amqp://guest:guest@127.0.0.1:1//", "amqp://guest:***@127.0.0.1:1//"),
    ],
    ids=["redis", "rabbitmq"],
)
def test_emit_with_the_broker_down_fails_clearly(lethe: Lethe, samples: Path, down, shown):
    lethe.env["LETHE_BROKER_URL"] = down
    lethe.env.setdefault("LETHE_SECRET", "a-secret-long-enough-for-tests")
    # at once: a refused connection is not waited on (the run fails on its timeout)
    result = lethe.run("emit", "order.closed", "--subject", "customer:1", check=False, timeout=20)
    assert result.returncode != 0
    assert f"cannot reach the broker at {shown} (OperationalError" in result.stderr
    result = lethe.run("emit", "--file", str(samples), check=False, timeout=20)
    assert result.returncode != 0
    assert "0 event(s) were sent before the failure" in result.stderr


@ON_EVERY_BROKER
def test_worker_killed_mid_batch_stores_every_event_once_after_restart(
    lethe: Lethe, tmp_path: Path
):
    events = tmp_path / "many.jsonl"
    with events.open("w") as handle:
        for i in range(6000):
            handle.write(
                json.dumps(
                    {
                        "id": f"k-{i}",
                        "type": "order.closed" if i % 3 else "contact.made",
                        "subject": f"customer:{i % 1500}",
                        "occurred_at": f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T10:00:00+01:00",
                        "data": {} if i % 3 else {"direction": ("inbound", "outbound")[i % 2]},
                    }
                )
                + "\n"
            )
    # Queued before the worker starts: sending takes about as long as ingesting, so a
    # worker already running could store everything before the kill.
    lethe.run("emit", "--file", str(events))
    assert _waiting(lethe) == 12  # batches of 500
    lethe.start_worker()
    wait_for(lambda: lethe.store_count("events") > 0, 60, "the first batch", lethe.logs)
    lethe.kill_workers(signal.SIGKILL)
    # store_count is -1 when the store cannot be read: that is no kill mid-batch either
    assert 0 < lethe.store_count("events") < 6000, "worker finished before it was killed"
    lethe.start_worker()
    lethe.wait_stored(6000, timeout=120)
    expected = lethe.simulate(events)
    wait_for(lambda: lethe.store_count("lifecycles") == len(expected), 60, "lifecycles", lethe.logs)
    assert lethe.store_count("events") == 6000
    assert lethe.deadlines() == expected
    wait_for(lambda: _waiting(lethe) == 0, 30, "an empty queue", lethe.logs)
