"""A backup restored after sweeps brings erased people back into the shop: `lethe shop
coverage` counts those rows, and `lethe purge --reapply` erases them again (people Lethe
has since forgotten included), each audited `reapplied`, and touches nothing else."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from harness import Lethe
from shop_history import shop_url_for
from sweeping import (
    NOW,
    Shop,
    build_shop,
    secret_of,
    seed_store,
    store_url,
)

from worker.demo.data import generate
from worker.demo.shop import metadata
from worker.domain.hashing import subject_ref
from worker.store.schema import StoredLifecycle

# A first sweep on a past clock, then the real one more than a year later: the people
# the first one erased (and nothing kept) are forgotten by the second.
FIRST = "2024-06-01T03:00:00+02:00"


def _dump(url: str, path: Path) -> None:
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    if url.startswith("postgresql"):
        command = [
            "pg_dump",
            "--clean",
            "--if-exists",
            "--no-owner",
            "-h",
            parts.hostname,
            "-p",
            str(parts.port or 5432),
            "-U",
            parts.username,
            "-f",
            str(path),
            database,
        ]
    else:
        command = ["mysqldump", "-h", parts.hostname, "-P", str(parts.port or 3306),
                   "-u", parts.username, f"--result-file={path}", database]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=120)  # fmt: skip


def _restore(url: str, path: Path) -> None:
    parts = urlsplit(url)
    database = parts.path.lstrip("/")
    if url.startswith("postgresql"):
        command = ["psql", "-q", "-v", "ON_ERROR_STOP=1", "-h", parts.hostname,
                   "-p", str(parts.port or 5432), "-U", parts.username, "-d", database,
                   "-f", str(path)]  # fmt: skip
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    else:
        command = ["mysql", "-h", parts.hostname, "-P", str(parts.port or 3306),
                   "-u", parts.username, database]  # fmt: skip
        with path.open() as dump:
            subprocess.run(command, check=True, stdin=dump, capture_output=True, timeout=120)


def _shop_rows(url: str) -> dict[str, list[tuple]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return {
                t.name: sorted(
                    tuple(_unrandom(str(v)) for v in row)
                    for row in connection.execute(sa.select(t).order_by(*t.primary_key.columns))
                )
                for t in metadata.sorted_tables
            }
    finally:
        engine.dispose()


# What `random` and `random_email` write is drawn again by each erasure (an erased value
# names no one, the first time or the second): compared by shape, not by value.
_RANDOM = re.compile(r"[a-p]{12,32}")
_RANDOM_EMAIL = re.compile(r"[a-p]{12,32}@erased\.invalid")


def _unrandom(value: str) -> str:
    if _RANDOM_EMAIL.fullmatch(value):
        return "<random>@erased.invalid"
    return "<random>" if _RANDOM.fullmatch(value) else value


def _store_rows(lethe: Lethe, query: Any) -> list[tuple]:
    engine = sa.create_engine(store_url(lethe))
    try:
        with engine.begin() as connection:
            result = connection.execute(query)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def _coverage(lethe: Lethe) -> list[dict[str, Any]]:
    result = lethe.run("shop", "coverage", "--format", "json")
    return json.loads(result.stdout)


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_restored_dump_is_erased_again_and_nothing_else_changes(
    embedded: Lethe, request, tmp_path, kind
):
    url = shop_url_for(kind, embedded, request)
    data = generate(people=60, seed=5)
    build_shop(url, data)
    shop = Shop(url, data, embedded)
    seed_store(embedded, data.events)
    dump = tmp_path / "before-the-sweeps.sql"
    _dump(url, dump)

    shop.purge_approved(FIRST)
    # forgetting also waits a year of real time after an erasure (worker/sweeps/forgetting.py):
    # the first sweep's real time is moved back to its clock
    lc = StoredLifecycle.__table__
    _store_rows(
        embedded,
        lc.update().where(lc.c.erased_at.is_not(None)).values(updated_at=lc.c.erased_at),
    )
    shop.purge_approved(NOW)
    erased_shop = _shop_rows(url)
    audited = {r[0] for r in _store_rows(embedded, sa.text("select subject_ref from erasures"))}
    named = {r[0] for r in _store_rows(embedded, sa.text("select subject from lifecycles"))}
    secret = secret_of(embedded)
    forgotten = audited - {subject_ref(secret, s) for s in named}
    assert forgotten, "the second sweep forgot the people the first one erased"
    before = _coverage(embedded)
    assert sum(r["back"] for r in before) == 0
    assert set(before[0]) >= {"activity", "table", "rows", "covered", "uncovered", "back"}

    _restore(url, dump)

    found = _coverage(embedded)
    back = {(r["activity"], r["target"]): r["back"] for r in found if r["back"]}
    assert back, found
    assert all(r["uncovered"] == b["uncovered"] for r, b in zip(found, before, strict=True))
    listed = json.dumps(found)
    assert not any(s in listed for s in named), "coverage names no subject"

    result = embedded.run("purge", "--reapply", "--format", "json")
    summary = json.loads(result.stdout)
    assert summary["status"] == "done" and summary["back"] == sum(back.values())

    assert _shop_rows(url) == erased_shop, "every erased row erased again, nothing else touched"
    reapplied = _store_rows(
        embedded,
        sa.text("select subject_ref, activity, target from erasures where outcome = 'reapplied'"),
    )
    assert len(reapplied) == len(set(reapplied)), "one audit row per subject and target"
    assert {(a, t) for _, a, t in reapplied} == set(back)
    assert {r for r, _, _ in reapplied} & forgotten, "forgotten people are found again"
    assert sum(r["back"] for r in _coverage(embedded)) == 0
    again = json.loads(embedded.run("purge", "--reapply", "--format", "json").stdout)
    assert again["status"] == "nothing_back"
