"""The HTTP intake, as a hosted shop or a webhook calls it: `lethe intake` on a real broker
and store, answering 202 once the broker holds the events, and 400, 401, 413 and 503 as
the contract says; reasons never repeat what was sent."""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import Lethe, OwnRedis, start_intake

EMAIL = "jeanne.martin@example.fr"


def post(
    base: str,
    body: bytes,
    token: str | None,
    content_type: str = "application/json",
) -> tuple[int, dict]:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(base + "/v1/events", data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def event(n: int, **extra) -> dict:
    return {
        "id": f"intake-{n}",
        "type": "order.closed",
        "subject": f"customer:{n}",
        "occurred_at": "2026-03-01T10:00:00+01:00",
        "data": {"order": f"A-{n}"},
        **extra,
    }


def test_events_posted_are_stored_and_refused_ones_named_by_index(distributed: Lethe):
    base = start_intake(distributed)
    token = distributed.env["LETHE_INTAKE_TOKEN"]
    distributed.start_worker()
    sent = [
        event(1),
        {**event(2), "type": "order.shipped"},  # not in the register
        {**event(3), "subject": EMAIL},  # a person named by an address
        event(4, match={"email": EMAIL}),
        {key: value for key, value in event(5).items() if key != "id"},
        "not an event",
    ]
    status, answer = post(base, json.dumps(sent).encode(), token)
    assert status == 202, answer
    assert answer["accepted"] == 2
    assert [r["index"] for r in answer["refused"]] == [2, 3, 5, 6]
    assert "missing field: id" in answer["refused"][2]["reason"]
    shown = json.dumps(answer)
    assert EMAIL not in shown and "order.shipped" not in shown and "not an event" not in shown
    distributed.wait_event("intake-1")
    distributed.wait_event("intake-4")
    assert distributed.store_count("events", "cast(data as text) like :raw", raw=f"%{EMAIL}%") == 0
    for log in distributed.logs:  # the intake's and the worker's
        assert EMAIL not in log.read_text(), log.name

    # JSON Lines, and the same ids again: stored once
    lines = "\n".join(json.dumps(event(n)) for n in (1, 6)).encode()
    status, answer = post(base, lines, token, "application/x-ndjson")
    assert (status, answer) == (202, {"accepted": 2, "refused": []})
    distributed.wait_event("intake-6")
    assert distributed.store_count("events") == 3


def test_a_request_without_the_token_or_with_a_bad_body_is_refused(distributed: Lethe):
    base = start_intake(distributed)
    token = distributed.env["LETHE_INTAKE_TOKEN"]
    body = json.dumps([event(1)]).encode()
    assert post(base, body, None)[0] == 401
    assert post(base, body, token + "x")[0] == 401
    assert post(base, body, token[:-1])[0] == 401
    status, answer = post(base, b"{not json", token)
    assert status == 400 and "not JSON" in answer["error"]
    assert post(base, b'{"id": "x"}', token)[0] == 400  # an object, not an array
    status, answer = post(base, b'{"id": 1}\nnot json\n', token, "application/x-ndjson")
    assert status == 400 and "line 2" in answer["error"] and "not json" not in answer["error"]
    too_many = json.dumps([event(n) for n in range(5001)]).encode()
    assert post(base, too_many, token)[0] == 413
    assert announced_too_big(base, token) == 413
    assert distributed.store_count("events") == 0  # nothing of it went anywhere

    with urllib.request.urlopen(base + "/v1/health", timeout=10) as response:
        assert json.loads(response.read())["status"] == "ok"
    with urllib.request.urlopen(base + "/openapi.json", timeout=10) as response:
        spec = json.loads(response.read())
    assert set(spec["paths"]) == {"/v1/events", "/v1/health"}
    assert set(spec["paths"]["/v1/events"]["post"]["responses"]) >= {"202", "401", "413", "503"}


def announced_too_big(base: str, token: str) -> int:
    """A body announced above 5 MB is refused before it is sent (as curl waits for a
    `100 Continue` before sending a large body)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/v1/events")
    for name, value in (
        ("Authorization", f"Bearer {token}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(5 * 1024 * 1024 + 1)),
    ):
        connection.putheader(name, value)
    connection.endheaders()
    status = connection.getresponse().status
    connection.close()
    return status


def test_the_intake_refuses_to_start_without_a_long_enough_token(distributed: Lethe):
    result = distributed.run("intake", check=False)
    assert result.returncode == 1 and "LETHE_INTAKE_TOKEN is not set" in result.stderr
    assert "secrets.token_urlsafe" in result.stderr
    distributed.env["LETHE_INTAKE_TOKEN"] = "short"
    result = distributed.run("intake", check=False)
    assert result.returncode == 1 and "shorter than 16 characters" in result.stderr


def test_with_the_broker_down_nothing_is_accepted_and_the_retry_stores_it_once(
    distributed: Lethe, own_redis: OwnRedis, tmp_path: Path
):
    distributed.env["LETHE_BROKER_URL"] = own_redis.url
    base = start_intake(distributed)
    token = distributed.env["LETHE_INTAKE_TOKEN"]
    body = json.dumps([event(1), event(2)]).encode()
    own_redis.kill()
    status, answer = post(base, body, token)
    assert status == 503, answer
    assert "nothing was accepted" in answer["error"]
    with pytest.raises(urllib.error.HTTPError) as health:
        urllib.request.urlopen(base + "/v1/health", timeout=30)
    assert health.value.code == 503
    own_redis.start()
    assert post(base, body, token) == (202, {"accepted": 2, "refused": []})
    distributed.start_worker()
    distributed.wait_stored(2)
    assert distributed.store_count("events") == 2
