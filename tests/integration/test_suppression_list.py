"""The suppression list as the shop sees it through `is_suppressed`: after leaving the
newsletter, after subscribing again, after the sweep that erases the old subscription,
and three years on. Events go through the client and a real worker, sweeps through
`lethe purge`, on the embedded default and on Redis + PostgreSQL."""

from __future__ import annotations

import pytest
from harness import Lethe
from sweeping import (
    EARLY,
    NOW,
    make_shop,
    seed_store,
    store_url,
)


def _emit(lethe: Lethe, *events: tuple[str, str, str, str | None]) -> None:
    """Send (type, subject, occurred_at, address or None) with the client, and wait until
    the worker has stored them."""
    before = lethe.store_count("events")
    code = ["from worker.client import emit"]
    for event_type, subject, at, address in events:
        match = f", match={{'email': {address!r}}}" if address else ""
        code.append(f"emit({event_type!r}, subject={subject!r}, occurred_at={at!r}{match})")
    lethe.python("\n".join(code) + "\n")
    lethe.wait_stored(before + len(events))


def _backdate_erasures(lethe: Lethe, when: str) -> None:
    import pendulum
    import sqlalchemy as sa

    from worker.store.schema import UTCDateTime

    engine = sa.create_engine(store_url(lethe))
    moved = sa.text(
        "UPDATE suppression SET erased_at = :at, kept_from = :at WHERE erased_at IS NOT NULL"
    ).bindparams(sa.bindparam("at", type_=UTCDateTime()))
    with engine.begin() as connection:
        assert connection.execute(moved, {"at": pendulum.parse(when)}).rowcount
    engine.dispose()


def _suppressed(lethe: Lethe, *addresses: str) -> list[bool]:
    code = "from worker.client import is_suppressed\n"
    code += f"print(' '.join(str(is_suppressed(a)) for a in {addresses!r}))\n"
    return [word == "True" for word in lethe.python(code).stdout.split()]


def test_subscribing_again_after_leaving_lifts_the_suppression_and_older_news_does_not(
    lethe: Lethe,
):
    ines, paul = "ines.roux@example.org", "paul.blanc@example.org"
    typed_her_way = " Ines.Roux@Example.org"
    lethe.start_worker()
    _emit(
        lethe,
        ("newsletter.subscribed", "customer:71", "2025-01-01T10:00:00+01:00", ines),
        ("newsletter.unsubscribed", "customer:71", "2026-03-01T10:00:00+01:00", ines),
        ("newsletter.unsubscribed", "customer:72", "2026-03-01T10:00:00+01:00", paul),
    )
    assert _suppressed(lethe, ines, paul) == [True, True]

    # a subscription dated before she left, arriving late, lifts nothing
    _emit(lethe, ("newsletter.subscribed", "customer:71", "2026-02-01T10:00:00+01:00", ines))
    assert _suppressed(lethe, ines) == [True]

    # she comes back (under a new subject, the address typed her way); he comes back
    # too, but the shop sends no address with it: Lethe cannot know which one to lift
    _emit(
        lethe,
        ("newsletter.subscribed", "visitor:73", "2026-04-01T10:00:00+02:00", typed_her_way),
        ("newsletter.subscribed", "customer:72", "2026-04-01T10:00:00+02:00", None),
    )
    assert _suppressed(lethe, ines, paul) == [False, True]

    # her old account's unsubscription, dated before she came back, arrives late
    _emit(lethe, ("newsletter.unsubscribed", "customer:71", "2026-03-15T10:00:00+01:00", ines))
    assert _suppressed(lethe, ines) == [False]

    # and she asks for erasure afterwards: suppressed again
    _emit(lethe, ("erasure.requested", "visitor:73", "2026-05-01T10:00:00+02:00", ines))
    assert _suppressed(lethe, ines) == [True]
    logs = "".join(log.read_text() for log in lethe.logs).lower()
    assert "roux" not in logs and "blanc" not in logs


def test_the_sweep_erasing_an_old_subscription_does_not_suppress_an_address_that_came_back(
    lethe: Lethe, request: pytest.FixtureRequest
):
    shop = make_shop(lethe, request, people=80)
    seed_store(lethe, shop.data.events)
    assert shop.purge_approved(EARLY)["status"] == "done"
    # subscribers who never left, unheld, and subscribed well before the story below
    busy = {
        e["subject"]
        for e in shop.data.events
        if e["type"] in ("newsletter.unsubscribed", "dispute.opened", "erasure.requested")
    }
    subscribed = {
        r["subject"]: r["email"]
        for r in shop.rows("newsletter_subscribers").values()
        if r["subject"] not in busy and r["subscribed_at"].year < 2026
    }
    quiet, told, stays = sorted(subscribed)[:3]
    lethe.start_worker()
    _emit(
        lethe,
        # the shop forgot the address: only the sweep, reading the row, can suppress it
        ("newsletter.unsubscribed", quiet, "2026-11-20T10:00:00+01:00", None),
        ("newsletter.unsubscribed", told, "2026-11-20T10:00:00+01:00", subscribed[told]),
        ("newsletter.unsubscribed", stays, "2026-11-20T10:00:00+01:00", None),
        # two of them subscribe again under new subjects before the night's sweep
        ("newsletter.subscribed", "visitor:9001", "2026-11-22T10:00:00+01:00", subscribed[quiet]),
        ("newsletter.subscribed", "visitor:9002", "2026-11-22T10:00:00+01:00", subscribed[told]),
    )
    addresses = (subscribed[quiet], subscribed[told], subscribed[stays])
    assert _suppressed(lethe, *addresses) == [False, False, False]

    assert shop.purge_approved(NOW)["status"] == "done"
    # the old subscriptions' rows are erased, as each unsubscription asked...
    rows = {r["subject"] for r in shop.rows("newsletter_subscribers").values()}
    assert not rows & {quiet, told, stays}
    # ...and only the address that did not come back is suppressed
    assert _suppressed(lethe, *addresses) == [False, False, True]


def test_each_sweep_drops_addresses_kept_longer_than_the_suppression_days(
    lethe: Lethe, request: pytest.FixtureRequest
):
    shop = make_shop(lethe, request, people=20)
    old, recent, back = "old@example.org", "recent@example.org", "back@example.org"
    lethe.start_worker()
    _emit(
        lethe,
        ("newsletter.unsubscribed", "customer:9101", "2020-11-20T10:00:00+01:00", old),
        ("newsletter.unsubscribed", "customer:9102", "2024-06-01T10:00:00+02:00", recent),
        ("newsletter.unsubscribed", "customer:9103", "2022-01-10T10:00:00+01:00", back),
        ("newsletter.subscribed", "customer:9103", "2024-02-01T10:00:00+01:00", back),
    )
    assert _suppressed(lethe, old, recent, back) == [True, True, False]
    assert lethe.store_count("suppression") == 3

    # An opposition counts from the sweep that erased the subscription, not from itself:
    # until then the shop may still hold the address. That sweep may run on a past clock
    # (`lethe purge --now`), but it erased now: a year on its clock ages nothing.
    assert shop.purge_approved("2025-01-01T03:00:00+01:00")["status"] == "done"
    lethe.env["LETHE_SUPPRESSION_DAYS"] = "365"
    lethe.run("purge", "--now", NOW)
    assert _suppressed(lethe, old, recent, back) == [True, True, False]
    # her return is remembered a period from itself, and that is past
    assert lethe.store_count("suppression") == 2

    # as if those erasures had happened on 2025-01-01: NOW is more than 365 days later
    _backdate_erasures(lethe, "2025-01-01T02:00:00+00:00")
    lethe.run("purge", "--now", NOW)
    assert _suppressed(lethe, old, recent, back) == [False, False, False]
    assert lethe.store_count("suppression") == 0


def test_an_opposition_stays_while_a_dispute_holds_the_subscription(
    lethe: Lethe, request: pytest.FixtureRequest
):
    shop = make_shop(lethe, request, people=20)
    address, subject = "held@example.org", "customer:9201"
    lethe.env["LETHE_SUPPRESSION_DAYS"] = "365"
    lethe.start_worker()
    _emit(
        lethe,
        ("newsletter.subscribed", subject, "2021-03-01T10:00:00+01:00", address),
        ("dispute.opened", subject, "2022-12-01T10:00:00+01:00", None),
        ("newsletter.unsubscribed", subject, "2023-01-15T10:00:00+01:00", address),
    )
    # held: the subscription is not erased, so the opposition, years old, must stay
    assert shop.purge_approved(NOW)["status"] == "done"
    assert _suppressed(lethe, address) == [True]
    _emit(lethe, ("dispute.closed", subject, "2026-11-25T10:00:00+01:00", None))
    assert shop.purge_approved(NOW)["erased"] >= 1
    assert _suppressed(lethe, address) == [True]
    lethe.run("purge", "--now", NOW)  # counted from that erasure now
    assert _suppressed(lethe, address) == [True]
