"""`emit_many` takes what `emit` takes (match=, datetimes), through the same checks."""

from __future__ import annotations

import json

from harness import Lethe

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
    assert lethe.store_count("events where cast(data as text) like '%hmac-sha256:%'") == 2
    assert lethe.store_count("events where lower(cast(data as text)) like '%ines%'") == 0
