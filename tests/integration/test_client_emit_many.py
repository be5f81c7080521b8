"""`emit_many` takes what `emit` takes (match=, datetimes), and when the broker goes away in
the middle of it, the shop learns which events left so it can send the rest: a real Redis
server of the test's own, killed between two batches, then started again."""

from __future__ import annotations

import base64
import json
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from harness import Lethe, wait_for

ADDRESS = "Ines.Roux@example.org"


def test_emit_many_takes_match_and_aware_datetimes_as_emit_does_and_refuses_naive_ones(
    lethe: Lethe,
):
    lethe.start_worker()
    out = lethe.python(
        "import json\n"
        "from datetime import datetime, timedelta, timezone\n"
        "from zoneinfo import ZoneInfo\n"
        "from worker.client import emit, emit_many, EventInvalid\n"
        "report = emit_many([\n"
        "    {'type': 'newsletter.subscribed', 'subject': 'customer:501', 'id': 'm-1',\n"
        "     'occurred_at': datetime(2025, 1, 1, 9, tzinfo=ZoneInfo('Europe/Paris')),\n"
        f"     'match': {{'email': {ADDRESS!r}}}}},\n"
        "    {'type': 'newsletter.unsubscribed', 'subject': 'customer:501', 'id': 'm-2',\n"
        "     'occurred_at': datetime(2025, 6, 1, 9, tzinfo=timezone.utc),\n"
        f"     'match': {{'email': {ADDRESS.lower()!r}}}}},\n"
        "    {'type': 'order.closed', 'subject': 'customer:502', 'id': 'm-3',\n"
        "     'occurred_at': datetime(2024, 3, 31, 2, 30)},\n"
        "    {'type': 'order.closed', 'subject': 'customer:502', 'id': 'm-4',\n"
        "     'occurred_at': datetime(2024, 3, 31, 2, 30, tzinfo=timezone(timedelta(hours=2)))},\n"
        "    {'type': 'order.closed', 'subject': 'customer:503', 'data': {'order': 'C-1'}},\n"
        "])\n"
        "try:\n"
        "    emit('order.closed', subject='customer:504', occurred_at=datetime(2024, 1, 1))\n"
        "except EventInvalid as exc:\n"
        "    naive = str(exc)\n"
        "print(json.dumps({'sent': report.sent, 'refused': report.refused, 'ids': report.ids,\n"
        "                  'naive': naive}))\n"
    ).stdout
    report = json.loads(out)
    assert report["sent"] == 4
    assert report["ids"][:3] == ["m-1", "m-2", "m-4"] and len(report["ids"]) == 4
    [(position, reason)] = report["refused"]
    assert position == 3 and "naive datetime" in reason and "time zone" in reason
    assert report["naive"] == reason  # emit and emit_many: one path, one message
    lethe.wait_stored(4)
    answer = lethe.python(
        f"from worker.client import is_suppressed\nprint(is_suppressed({ADDRESS!r}))"
    )
    assert answer.stdout.strip() == "True"
    rows = {(r["subject"], r["activity"]): r for r in lethe.deadlines()}
    # 02:30+02:00 is 00:30 UTC, 01:30 in Paris before that night's change to summer time
    assert rows[("customer:502", "crm.customers")]["deadline_at"] == "2029-03-31T01:30:00+02:00"
    assert rows[("customer:501", "newsletter")]["state"] == "due"
    assert rows[("customer:503", "crm.customers")]["anchor_at"]  # no time given: now
    assert lethe.store_count("events where cast(data as text) like '%hmac-sha256-v2:%'") == 2
    assert lethe.store_count("events where lower(cast(data as text)) like '%ines%'") == 0


def test_emit_many_refuses_an_address_hidden_one_level_down_alone_and_sends_the_rest(
    lethe: Lethe,
):
    email, phone = "jean.dupont@example.com", "+33 6 12 34 56 78"
    lethe.start_worker()
    out = lethe.python(
        "import json\n"
        "from worker.client import emit_many\n"
        "hidden = {'id': 'n-1', 'type': 'order.closed', 'subject': 'customer:601',\n"
        "          'occurred_at': '2026-03-01T10:00:00+01:00',\n"
        f"          'data': {{'contact': {{'email': {email!r}}}}}}}\n"
        "report = emit_many([\n"
        "    json.dumps(hidden),  # a line of an events file\n"
        "    {'type': 'order.closed', 'subject': 'customer:602', 'id': 'n-2',\n"
        f"     'data': {{'phones': [{phone!r}]}}}},\n"
        "    {'type': 'order.closed', 'subject': 'customer:603', 'id': 'n-3',\n"
        "     'data': {'order': {'id': 'A-1'}}},\n"
        "])\n"
        "print(json.dumps({'sent': report.sent, 'refused': report.refused, 'ids': report.ids}))\n"
    ).stdout
    report = json.loads(out)
    assert (report["sent"], report["ids"]) == (1, ["n-3"])
    assert [position for position, _ in report["refused"]] == [1, 2]
    assert all("looks like an e-mail address or phone number" in r for _, r in report["refused"])
    assert email not in out and phone not in out
    lethe.wait_event("n-3")
    # the refused never left the shop: nothing of them in the store, not even a dead letter
    assert lethe.store_count("events") == 1 and lethe.store_count("dead_letters") == 0
    assert lethe.store_count("events where cast(data as text) like '%A-1%'") == 1


# -- a broker that goes away mid-way -------------------------------------------------------


class OwnRedis:
    """A redis-server of the test's own on a free port; its append-only file keeps what was
    sent before a SIGKILL, so the queue can be read when it is started again."""

    def __init__(self, folder: Path):
        self.folder = folder
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                str(self.folder),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(self._answers, 20, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
        except redis.ConnectionError:
            return False

    def reap(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=20)

    def queued_ids(self) -> list[str]:
        """Event ids in the messages waiting in the events queue, oldest first."""
        client = redis.Redis.from_url(self.url)
        ids: list[str] = []
        for key in client.scan_iter(match="*events*"):
            if client.type(key) != b"list":
                continue
            for raw in reversed(client.lrange(key, 0, -1)):  # LPUSHed: newest first
                envelope = json.loads(raw)
                body = envelope["body"]
                if envelope["properties"].get("body_encoding") == "base64":
                    body = base64.b64decode(body)
                args, _, _ = json.loads(body)
                ids.extend(event["id"] for event in args[0])
        return ids


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = OwnRedis(folder)
    server.start()
    yield server
    server.reap()


SHOP_CODE = """
import json, os, signal, socket, time
from worker.client import BrokerUnavailable, emit_many

events = [
    {{'id': f'b-{{i}}', 'type': 'visit.recorded', 'subject': f'visitor:{{i}}',
      'occurred_at': '2026-01-15T12:00:00Z'}}
    for i in range(1, 101)
]
events[4]['subject'] = 'visitor:jeanne.martin@example.org'  # refused, position 5
batches = []

def stop_the_broker_after_two_batches(n):
    batches.append(n)
    if len(batches) == 2:
        os.kill({pid}, signal.SIGKILL)
        while True:
            try:
                socket.create_connection(('127.0.0.1', {port}), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                break

try:
    emit_many(events, batch_size=10, progress=stop_the_broker_after_two_batches)
    print(json.dumps({{'raised': False}}))
except BrokerUnavailable as exc:
    print(json.dumps({{'raised': True, 'sent': exc.sent, 'sent_ids': exc.sent_ids,
                      'resume_at': exc.resume_at, 'refused': exc.refused,
                      'message': str(exc)}}))
"""

RESEND_CODE = """
import json
from worker.client import emit_many

events = [
    {{'id': f'b-{{i}}', 'type': 'visit.recorded', 'subject': f'visitor:{{i}}',
      'occurred_at': '2026-01-15T12:00:00Z'}}
    for i in range(1, 101)
]
events[4]['subject'] = 'visitor:jeanne.martin@example.org'
rest = emit_many(events[{resume_at} - 1:])
# a careless retry sends everything again: the ids make it harmless
again = emit_many(events)
print(json.dumps([rest.sent, again.sent]))
"""


def test_a_broker_lost_mid_way_says_which_events_were_sent_and_the_rest_can_follow(
    distributed: Lethe, own_redis: OwnRedis
):
    lethe = distributed
    lethe.env["LETHE_BROKER_URL"] = own_redis.url
    assert own_redis.process is not None
    out = lethe.python(SHOP_CODE.format(pid=own_redis.process.pid, port=own_redis.port)).stdout
    failure = json.loads(out)
    assert failure["raised"], "emit_many should raise BrokerUnavailable"
    own_redis.reap()

    # two batches of ten accepted events went; position 5 was refused; the third batch
    # starts at position 22
    expected = [f"b-{i}" for i in range(1, 22) if i != 5]
    assert failure["sent"] == 20 and failure["sent_ids"] == expected
    assert failure["resume_at"] == 22
    assert [position for position, _ in failure["refused"]] == [5]
    message = failure["message"]
    assert "20 event(s) were sent" in message and "position 22" in message
    assert "jeanne" not in message.lower() and "b-1" not in message
    assert "jeanne" not in json.dumps(failure["refused"]).lower()

    # the broker comes back with what it had: exactly the events said to be sent
    own_redis.start()
    assert own_redis.queued_ids() == expected

    lethe.start_worker("--concurrency=1")
    resent = lethe.python(RESEND_CODE.format(resume_at=failure["resume_at"])).stdout
    assert json.loads(resent) == [79, 99]
    lethe.wait_stored(99)
    wait_for(lambda: own_redis.queued_ids() == [], 60, "the queue drained", lethe.logs)
    wait_for(_nothing_unacked(own_redis), 60, "every message acknowledged", lethe.logs)
    assert lethe.store_count("events") == 99
    assert lethe.store_count("events where id = 'b-5'") == 0
    visits = [r for r in lethe.deadlines() if r["activity"] == "website.navigation"]
    assert len(visits) == 99


def _nothing_unacked(server: OwnRedis):
    def check() -> bool:
        client = redis.Redis.from_url(server.url)
        return all(client.hlen(key) == 0 for key in client.scan_iter(match="*unacked"))

    return check


def test_lethe_emit_file_names_the_line_to_send_again_from_when_the_broker_is_down(
    distributed: Lethe, tmp_path: Path
):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    distributed.env["LETHE_BROKER_URL"] = f"redis://127.0.0.1:{port}/0"
    lines = [
        "",
        json.dumps(
            {
                "id": "f-1",
                "type": "visit.recorded",
                "subject": "visitor:jeanne@example.org",
                "occurred_at": "2026-01-15T12:00:00Z",
            }
        ),
        json.dumps(
            {
                "id": "f-2",
                "type": "visit.recorded",
                "subject": "visitor:2",
                "occurred_at": "2026-01-15T12:00:00Z",
            }
        ),
    ]
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    result = distributed.run("emit", "--file", str(events), check=False)
    assert result.returncode == 1
    assert f"{events}:2: refused: subject id looks like an e-mail" in result.stderr
    assert f"{events}: 0 event(s) sent; send the file again from line 3" in result.stderr
    assert "jeanne" not in result.stderr
