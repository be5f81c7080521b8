"""Faults around the register and the embedded spool: no event is lost or counted twice.

- a worker refuses to start on a register it cannot load, as on a store schema behind;
- a register that breaks under a running worker sends the batches it takes to the dead
  letters, with the register's problem as the reason, and they replay after the fix;
- a batch emitted while no embedded worker runs is delivered once when one starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import CELERY, LETHE, ROOT, Lethe, copy_register, teach_loyalty_joined, wait_for

SHOP_EVENTS = [
    {
        "id": "rf-order",
        "type": "order.closed",
        "subject": "customer:501",
        "occurred_at": "2025-05-05T10:00:00+02:00",
    },
    {
        "id": "rf-contact",
        "type": "contact.made",
        "subject": "prospect:502",
        "occurred_at": "2025-06-01T09:30:00+02:00",
        "data": {"direction": "inbound"},
    },
    {
        "id": "rf-visit",
        "type": "visit.recorded",
        "subject": "visitor:503",
        "occurred_at": "2025-07-14T22:00:00+02:00",
    },
]


def _write_events(path: Path, events: list[dict]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return path


def _break(register: Path) -> None:
    """An edit gone wrong: a flow sequence left open, as a hurried hand would leave it."""
    text = register.read_text()
    broken = text.replace("keep: 5 years", "keep: [5 years", 1)
    assert broken != text
    register.write_text(broken)


def _problem(lethe: Lethe, register: Path) -> str:
    """The `file:line: message` that `lethe register check` reports for this register."""
    check = lethe.run("register", "check", str(register), check=False)
    assert check.returncode == 1, check.stderr
    first = check.stderr.strip().splitlines()[0]
    assert first.startswith(f"{register}:"), first
    return first


def _shop(lethe: Lethe, register: Path | None = None) -> Lethe:
    """The shop's side: same broker and home, its own copy of the register (the shipped one
    unless given), so it keeps emitting while the worker's copy is broken or older."""
    env = {k: v for k, v in lethe.env.items() if k != "LETHE_REGISTER"}
    if register is not None:
        env["LETHE_REGISTER"] = str(register)
    return Lethe(lethe.home, env)


def _refused_start(command: list[str], lethe: Lethe) -> subprocess.CompletedProcess:
    """Run a worker command that must exit at once; one that runs on is stopped, and fails."""
    process = subprocess.Popen(
        command,
        env=lethe.env,
        cwd=lethe.home,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"the worker started on a broken register:\n{stderr[-3000:]}"
        ) from None
    assert process.returncode != 0, stderr
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_worker_refuses_to_start_on_a_broken_register_and_names_the_line(
    lethe: Lethe, tmp_path: Path
):
    register = copy_register(tmp_path)
    _break(register)
    problem = _problem(lethe, register)
    lethe.env["LETHE_REGISTER"] = str(register)

    started = _refused_start([LETHE, "worker"], lethe)
    assert started.returncode == 78, started.stderr  # what systemd and compose are told
    assert problem in started.stderr
    assert f"lethe register check {register}" in started.stderr
    assert "the worker does not start" in started.stderr

    if not lethe.embedded:
        # what docker compose runs: the same refusal, before any message is taken
        queue = f"{lethe.env['LETHE_QUEUE_PREFIX']}.events"
        celery = _refused_start(
            [CELERY, "-A", "worker.app", "worker", "--loglevel=INFO", "-Q", queue], lethe
        )
        assert celery.returncode == 78, celery.stdout + celery.stderr
        assert problem in celery.stderr
        assert f"lethe register check {register}" in celery.stderr


def test_events_taken_while_the_register_is_broken_wait_in_dead_letters_until_replayed(
    lethe: Lethe, tmp_path: Path
):
    register = copy_register(tmp_path)
    good_text = register.read_text()
    lethe.env["LETHE_REGISTER"] = str(register)
    lethe.start_worker()

    _break(register)
    problem = _problem(lethe, register)
    shop = _shop(lethe)
    events = _write_events(tmp_path / "events.jsonl", SHOP_EVENTS)
    assert "sent 3, refused 0" in shop.run("emit", "--file", str(events)).stderr
    # one event per message too: the worker gathers those on another path
    shop.run(
        "emit",
        "newsletter.subscribed",
        "--subject",
        "customer:504",
        "--at",
        "2025-08-01T08:00:00+02:00",
        "--id",
        "rf-single",
    )

    wait_for(lambda: lethe.store_count("dead_letters") == 4, 60, "4 dead letters", lethe.logs)
    assert lethe.store_count("events") == 0
    letters = json.loads(lethe.run("dead-letters", "--format", "json").stdout)
    assert sorted(x["event_id"] for x in letters) == sorted(
        ["rf-order", "rf-contact", "rf-visit", "rf-single"]
    )
    for letter in letters:
        assert f"register unusable: {problem}" in letter["reason"]
        assert "lethe dead-letters --replay" in letter["reason"]
    status = lethe.run("status", check=False)
    assert status.returncode != 0
    assert "4 event(s) refused" in status.stdout

    # a replay on the broken register would refuse everything again: it must not run
    refused = lethe.run("dead-letters", "--replay", check=False)
    assert refused.returncode != 0
    assert problem in refused.stderr
    assert lethe.store_count("dead_letters") == 4

    register.write_text(good_text)
    replay = lethe.run("dead-letters", "--replay")
    assert "replayed 4, still refused 0" in replay.stderr
    assert lethe.store_count("dead_letters") == 0
    all_events = _write_events(
        tmp_path / "all.jsonl",
        [
            *SHOP_EVENTS,
            {
                "id": "rf-single",
                "type": "newsletter.subscribed",
                "subject": "customer:504",
                "occurred_at": "2025-08-01T08:00:00+02:00",
            },
        ],
    )
    assert lethe.deadlines() == lethe.simulate(all_events)

    # the running worker reads the fixed register on its next batch: no restart needed
    shop.run(
        "emit",
        "contact.made",
        "--direction",
        "inbound",
        "--subject",
        "prospect:505",
        "--at",
        "2025-09-09T09:00:00+02:00",
    )
    lethe.wait_stored(5)
    assert lethe.store_count("dead_letters") == 0


def test_a_batch_emitted_while_no_worker_runs_is_delivered_once(embedded: Lethe, tmp_path: Path):
    # The shop's register already knows `loyalty.joined`; the worker's does not yet,
    # so those events are refused by the worker and become dead letters.
    shop_register = tmp_path / "shop-register.yaml"
    shop_register.write_text((ROOT / "registers" / "negomarkets.yaml").read_text())
    teach_loyalty_joined(shop_register)
    shop = _shop(embedded, shop_register)

    def six(name: str, event_type: str, day: int) -> list[dict[str, str]]:
        return [
            {
                "id": f"once-{name}-{i}",
                "type": event_type,
                "subject": f"customer:{600 + i}",
                "occurred_at": f"2025-0{1 + i}-{day}T10:00:00+01:00",
            }
            for i in range(6)
        ]

    good, bad = six("good", "order.closed", 10), six("bad", "loyalty.joined", 11)
    mixed = [event for pair in zip(good, bad, strict=True) for event in pair]
    assert (
        "sent 12, refused 0"
        in shop.run("emit", "--file", str(_write_events(tmp_path / "mixed.jsonl", mixed))).stderr
    )
    shop.run("emit", "order.closed", "--subject", "customer:700", "--id", "once-good-single")
    shop.run("emit", "loyalty.joined", "--subject", "customer:700", "--id", "once-bad-single")
    good_ids = {e["id"] for e in good} | {"once-good-single"}
    bad_ids = {e["id"] for e in bad} | {"once-bad-single"}

    spool = embedded.home / "var" / "spool"
    queued = embedded.home / "var" / "broker" / "out"
    assert len(list(spool.glob("*.json"))) == 3
    assert len(list(queued.glob("*.msg"))) == 3

    embedded.start_worker()
    wait_for(
        lambda: (
            embedded.store_count("dead_letters") >= len(bad_ids)
            and embedded.store_count("events") >= len(good_ids)
            and not list(spool.glob("*.json"))
            and not list(queued.glob("*.msg"))
        ),
        60,
        "every message ingested",
        embedded.logs,
    )
    # a second delivery would come right behind the first: give it time to show
    time.sleep(3)

    letters = json.loads(embedded.run("dead-letters", "--format", "json").stdout)
    assert sorted(x["event_id"] for x in letters) == sorted(bad_ids)
    assert embedded.store_count("dead_letters") == len(bad_ids)
    assert embedded.store_count("events") == len(good_ids)
    stored = embedded.store_count(
        "events where id in (" + ", ".join(f"'{i}'" for i in sorted(good_ids)) + ")"
    )
    assert stored == len(good_ids)
    status = embedded.run("status", check=False)
    assert f"{len(bad_ids)} event(s) refused" in status.stdout


@pytest.mark.parametrize("setting", [{"LETHE_SWEEP_AT": "3am"}, {"LETHE_SECRET": "short"}])
def test_celery_refuses_bad_settings_in_one_line_not_a_traceback(
    distributed: Lethe, setting: dict[str, str]
):
    env = {**distributed.env, **setting}
    for command in (["worker", "--loglevel=INFO"], ["beat"]):
        result = subprocess.run(
            [CELERY, "-A", "worker.app", *command],
            env=env,
            cwd=distributed.home,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 78, result.stderr
        assert "Traceback" not in result.stderr
        [name] = setting
        assert result.stderr.startswith(f"lethe: {name}"), result.stderr
