"""Faults: the store goes down under a running worker, a register changes under a running store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import Lethe, copy_register, wait_for
from tcp_proxy import TcpProxy

# crm.customers' clock in the shipped register: only the customer's own contact counts
CRM_CLOCK = "[order.closed, {type: contact.made, when: {direction: inbound}}]"


@pytest.fixture
def proxied_store(distributed: Lethe):
    """The distributed setup, with the worker reaching PostgreSQL through a cuttable relay."""
    direct = distributed.env["LETHE_DATABASE_URL"]
    proxy = TcpProxy(5432)
    distributed.env["LETHE_DATABASE_URL"] = direct.replace(":5432/", f":{proxy.port}/")
    yield distributed, proxy, direct
    proxy.close()


def test_events_sent_while_the_store_is_down_are_stored_once_it_is_back(
    proxied_store, samples: Path
):
    lethe, proxy, direct = proxied_store
    lethe.start_worker()
    proxy.cut()
    lethe.run("emit", "--file", str(samples))
    lethe.python(
        "from worker.client import emit\n"
        "emit('contact.made', subject='prospect:77', id='while-down',"
        " occurred_at='2026-02-02T10:00:00+01:00', data={'direction': 'inbound'})\n"
    )
    wait_for(
        lambda: "store unavailable, will retry" in lethe.logs[0].read_text(),
        30,
        "the worker to see the outage",
        lethe.logs,
    )
    watcher = Lethe(lethe.home, {**lethe.env, "LETHE_DATABASE_URL": direct})
    assert watcher.store_count("events") == 0
    proxy.restore()
    unique = len({json.loads(x)["id"] for x in samples.read_text().splitlines() if x.strip()})
    watcher.wait_stored(unique + 1, timeout=90)
    rows = watcher.deadlines()
    assert [r for r in rows if r["subject"] != "prospect:77"] == watcher.simulate(samples)
    assert watcher.store_count("dead_letters") == 0


def test_recompute_shows_the_diff_then_applies_a_register_change(
    lethe: Lethe, samples: Path, tmp_path: Path
):
    lethe.start_worker()
    lethe.run("emit", "--file", str(samples))
    wait_for(lambda: lethe.deadlines() == lethe.simulate(samples), 60, "lifecycles", lethe.logs)
    before = lethe.deadlines()

    register = copy_register(tmp_path)
    text = register.read_text()
    shorter = text.replace(
        f"      - clock: {CRM_CLOCK}\n        ends_on: [erasure.requested]\n        keep: 5 years",
        f"      - clock: {CRM_CLOCK}\n        ends_on: [erasure.requested]\n        keep: 3 years",
    )
    assert shorter != text
    register.write_text(shorter)
    lethe.env["LETHE_REGISTER"] = str(register)

    dry = lethe.run("recompute", "--dry-run")
    crm = next(line for line in dry.stdout.splitlines() if line.startswith("crm.customers"))
    # customer:42, 43 and 45 are anchored on an order or a contact; 44 ended by erasure request
    assert crm.split()[1:4] == ["3", "0", "1"], dry.stdout
    assert "dry run: nothing changed" in dry.stderr
    assert lethe.deadlines() == before

    lethe.run("recompute")
    assert lethe.deadlines() == lethe.simulate(samples)
    moved = {
        r["subject"]: r["deadline_at"]
        for r in lethe.deadlines()
        if r["activity"] == "crm.customers"
    }
    assert moved["customer:42"] == "2024-03-28T01:30:00+01:00"


def test_a_hold_placed_by_hand_survives_a_recompute(embedded: Lethe, samples: Path):
    embedded.start_worker()
    embedded.run("emit", "--file", str(samples))
    wait_for(lambda: embedded.deadlines() == embedded.simulate(samples), 60, "lifecycles")
    subject = "customer:42"
    embedded.run("hold", "place", subject, "--reason", "case LIT-1")
    embedded.run("recompute")
    states = {r["state"] for r in embedded.deadlines() if r["subject"] == subject}
    assert states - {"erased"} == {"held"}, states
