"""Holds on the retention dashboard: subjects only as keyed hashes, and nothing in a reason
that names the person by the subject, an e-mail address or a phone number, even in a reason
written by a release that did not check them yet; on the embedded default and on PostgreSQL."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from harness import Lethe
from sqlalchemy.orm import Session
from test_dashboard import get, serve_dashboard, stop

HELD = "customer:100042"
HELD_BEFORE = "customer:100077"
EMAIL = "jean.dupont@example.fr"
PHONE = "06 12 34 56 78"


def _secret(lethe: Lethe) -> bytes:
    if "LETHE_SECRET" in lethe.env:
        return lethe.env["LETHE_SECRET"].encode()
    return (lethe.home / "var" / "secret").read_text().strip().encode()


def test_holds_are_shown_by_keyed_hash_and_old_reasons_are_masked(lethe: Lethe):
    from worker.domain.hashing import subject_ref
    from worker.store.schema import Hold
    from worker.store.sessions import now_utc

    lethe.env["LETHE_DASHBOARD_TOKEN"] = token = f"token-{uuid.uuid4().hex}"
    lethe.run("db", "upgrade")
    lethe.run("hold", "place", HELD, "--reason", "case LIT-2026-3")
    # A hold placed before reasons were checked, as an older release stored it.
    store = sa.create_engine(
        lethe.env.get("LETHE_DATABASE_URL") or f"sqlite:///{lethe.home / 'var' / 'lethe.sqlite3'}"
    )
    with Session(store) as session:
        reason = f"{HELD_BEFORE} asked by {EMAIL} on {PHONE}, client 100077, case LIT-2026-9"
        session.add(Hold(subject=HELD_BEFORE, reason=reason, placed_at=now_utc()))
        session.commit()
    store.dispose()

    process, base = serve_dashboard(lethe)
    try:
        status, page = get(f"{base}/", token)
        metrics_status, metrics = get(f"{base}/metrics", token)
    finally:
        stop(process)
    assert status == 200 and metrics_status == 200
    secret = _secret(lethe)
    assert subject_ref(secret, HELD) in page and subject_ref(secret, HELD_BEFORE) in page
    assert "case LIT-2026-3" in page and "case LIT-2026-9" in page
    assert "[subject] asked by [removed] on [removed], client [subject]" in page
    for text in (page, metrics):
        for needle in ("100042", "100077", EMAIL, PHONE, "jean.dupont"):
            assert needle not in text, needle
