"""What must hold for any history a shop can send, not just the examples we thought of.

- the order of events and their redelivery never change a lifecycle;
- a deadline is anchor + keep read on the Paris wall clock, never earlier;
- a deadline is never before its anchor.
"""

from __future__ import annotations

import calendar
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pendulum
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.durations import Duration
from worker.domain.events import Event, parse_event
from worker.domain.register import Activity, Register, Rule
from worker.domain.register_file import default_register_path, load_register
from worker.domain.retention import lifecycles

PARIS = ZoneInfo("Europe/Paris")
NOW = pendulum.parse("2026-11-26T00:00:00+01:00")
REGISTER: Register = load_register(default_register_path())
DISTRIBUTORS = ["DIST-NORD", "DIST-SUD", "DIST-AUTRE", None]
# Offsets a shop may write, including half hours and both sides of UTC.
OFFSETS = [-600, -300, -240, 0, 60, 120, 330, 540, 840]
# A few instants reused often, so ties (same instant, different events) are tried;
# two are on the Paris daylight-saving nights.
POOL = [
    datetime(2020, 2, 29, 10, 0, tzinfo=UTC),
    datetime(2024, 12, 31, 23, 30, tzinfo=UTC),
    datetime(2025, 3, 30, 0, 30, tzinfo=UTC),
    datetime(2025, 10, 26, 0, 30, tzinfo=UTC),
    datetime(2025, 10, 26, 1, 30, tzinfo=UTC),
]

settings.register_profile("lethe", max_examples=150, deadline=None)
settings.load_profile("lethe")


def utc(moment: datetime) -> datetime:
    # `==` between a Paris time in the repeated autumn hour and another zone is always
    # False (PEP 495), even for the same instant: compare instants in UTC.
    return moment.astimezone(UTC)


def _kinds_types(register: Register) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for kind in register.subject_kinds:
        types = {t for a in register.activities if kind in a.subjects for t in a.event_types}
        found[kind] = sorted(types | set(register.holds.place) | set(register.holds.lift))
    return found


TYPES_BY_KIND = _kinds_types(REGISTER)


@st.composite
def instants(draw) -> str:
    utc = draw(
        st.one_of(
            st.sampled_from(POOL),
            st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 12, 31)).map(
                lambda d: d.replace(microsecond=0, tzinfo=UTC)
            ),
        )
    )
    offset = timezone(timedelta(minutes=draw(st.sampled_from(OFFSETS))))
    return utc.astimezone(offset).isoformat()


@st.composite
def event_data(draw, event_type: str) -> dict:
    data: dict = {}
    if event_type == "order.closed":
        distributor = draw(st.sampled_from(DISTRIBUTORS))
        if distributor:
            data["distributor"] = distributor
    if event_type == "candidate.rejected":
        keep = draw(st.sampled_from([True, False, None]))
        if keep is not None:
            data["keep"] = keep
    if event_type == "contact.made":
        data["direction"] = draw(st.sampled_from(["inbound", "outbound"]))
    return data


@st.composite
def histories(
    draw,
    types_for=lambda kind: TYPES_BY_KIND[kind],
    kinds=None,
    data_for=event_data,
    max_size: int = 8,
):
    """One subject and the events the shop sent about it (ids unique)."""
    kind = draw(st.sampled_from(kinds or REGISTER.subject_kinds))
    subject = f"{kind}:1"
    types = types_for(kind)
    size = draw(st.integers(min_value=1, max_value=max_size))
    events = []
    for n in range(size):
        event_type = draw(st.sampled_from(types))
        raw = {
            "id": f"ev-{n}",
            "type": event_type,
            "subject": subject,
            "occurred_at": draw(instants()),
            "data": draw(data_for(event_type)),
        }
        events.append(parse_event(raw, REGISTER))
    return subject, events


def rows(subject: str, events: list[Event]) -> list[dict]:
    return [lc.as_row(NOW) for lc in lifecycles(subject, events, REGISTER)]


@given(history=histories(), data=st.data())
def test_the_order_of_events_never_changes_a_lifecycle(history, data):
    subject, events = history
    shuffled = data.draw(st.permutations(events))
    assert rows(subject, shuffled) == rows(subject, events)


@given(history=histories(), data=st.data())
def test_redelivered_events_never_change_a_lifecycle(history, data):
    subject, events = history
    again = data.draw(st.lists(st.sampled_from(events), min_size=1, max_size=8))
    # A redelivery is a fresh copy of the same message, not the same object.
    copies = [dataclasses.replace(e, data=dict(e.data)) for e in again]
    mixed = data.draw(st.permutations(events + copies))
    assert rows(subject, mixed) == rows(subject, events)


@given(history=histories(), other=histories(), data=st.data())
def test_events_about_someone_else_never_change_a_lifecycle(history, other, data):
    subject, events = history
    _, noise = other
    noise = [
        dataclasses.replace(e, id=f"other-{e.id}", subject=e.subject.replace(":1", ":2"))
        for e in noise
    ]
    mixed = data.draw(st.permutations(events + noise))
    assert rows(subject, mixed) == rows(subject, events)


@given(history=histories())
def test_a_deadline_is_never_before_its_anchor(history):
    subject, events = history
    for lc in lifecycles(subject, events, REGISTER):
        if lc.deadline_at is not None:
            assert lc.anchor_at is not None
            assert lc.deadline_at >= lc.anchor_at, lc
        elif lc.anchor_at is not None:
            # Once anchored, only an open subscription has no deadline.
            assert REGISTER.activity(lc.activity).retention[0].opens_on, lc


def _anchor_plus_keep(anchor: datetime, keep: Duration) -> datetime:
    """anchor + keep on the Paris wall clock, worked out with the standard library only.

    A month end is clamped (31 Jan + 13 months = 28 Feb). A wall time that
    happens twice (autumn) is the later instant, and one that does not exist
    (spring) is shifted forward by the missing hour: never an early erasure.
    Nothing to add leaves the anchor where it is, in whichever autumn hour.
    """
    if keep == Duration():
        return anchor.astimezone(PARIS)
    local = anchor.astimezone(PARIS).replace(tzinfo=None)
    months = local.month - 1 + keep.months + 12 * keep.years
    year, month = local.year + months // 12, months % 12 + 1
    day = min(local.day, calendar.monthrange(year, month)[1])
    wall = local.replace(year=year, month=month, day=day) + timedelta(
        weeks=keep.weeks, days=keep.days
    )
    return max(wall.replace(tzinfo=PARIS, fold=0), wall.replace(tzinfo=PARIS, fold=1), key=utc)


def _keep_of(rule: Rule, event: Event) -> Duration:
    if rule.keep_by is not None:
        chosen = event.data.get(rule.keep_by.field)
        if chosen in rule.keep_by.durations:
            return rule.keep_by.durations[chosen]
    return rule.keep


def _clock_only(activity: Activity):
    """Events that only move the clock of `activity` (no end, no opening), with consent given."""
    rule = activity.retention[0]
    when = {entry.type: entry.when for entry in rule.clock}

    def types_for(kind: str) -> list[str]:
        return list(when)

    def data_for(event_type: str):
        # what the clock entry asks of the data (an inbound contact), on top of the rest
        return event_data(event_type).map(lambda data: {**data, **when[event_type]})

    return histories(types_for=types_for, kinds=activity.subjects, data_for=data_for)


CLOCK_ACTIVITIES = [a for a in REGISTER.activities if a.retention[0].clock]


@given(data=st.data())
def test_a_clock_deadline_is_anchor_plus_keep_never_earlier(data):
    activity = data.draw(st.sampled_from(CLOCK_ACTIVITIES), label="activity")
    subject, events = data.draw(_clock_only(activity), label="history")
    rule = activity.retention[0]
    if rule.consent is not None:
        # With consent, a rejection only moves the clock (the end at rejection is tested apart).
        events = [dataclasses.replace(e, data={**e.data, rule.consent.flag: True}) for e in events]
    lc = next(lc for lc in lifecycles(subject, events, REGISTER) if lc.activity == activity.id)
    latest = max(e.occurred_at for e in events)
    at_latest = [e for e in events if e.occurred_at == latest]
    # With keep_by (a keep per distributor) every order keeps the rows its own keep: an
    # earlier order with a longer keep outlasts a later one with a shorter.
    counted = events if rule.keep_by is not None else at_latest
    earliest_allowed = max(_anchor_plus_keep(e.occurred_at, _keep_of(rule, e)) for e in counted)

    assert utc(lc.anchor_at) == utc(latest)
    assert lc.anchor_at.utcoffset() == latest.astimezone(PARIS).utcoffset()
    assert lc.deadline_at >= earliest_allowed, "erased before the register allows"
    assert utc(lc.deadline_at) == utc(earliest_allowed), "kept longer than the register says"
    assert lc.deadline_at.utcoffset() == earliest_allowed.utcoffset(), "not in Paris time"


@given(
    anchor=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2040, 12, 31), timezones=st.just(PARIS)
    ),
    keep=st.builds(
        Duration,
        years=st.integers(0, 12),
        months=st.integers(0, 30),
        weeks=st.integers(0, 10),
        days=st.integers(0, 400),
    ),
)
def test_any_duration_after_any_paris_anchor_is_the_calendar_sum(anchor, keep):
    anchor = pendulum.instance(anchor.replace(microsecond=0)).in_timezone("Europe/Paris")
    expected = _anchor_plus_keep(anchor, keep)
    got = keep.after(anchor)
    assert got >= anchor
    assert utc(got) == utc(expected)
    assert got.utcoffset() == expected.utcoffset()


# The activities whose clock only the person's own contact moves (CNIL: "dernier contact
# émanant du prospect"): a shop's outbound call or mailing may never keep them longer.
INBOUND_ONLY = ["website.prospects", "crm.customers", "website.accounts", "ambassadors"]


def _deadlines(subject: str, events: list[Event]) -> dict[str, datetime | None]:
    return {
        lc.activity: lc.deadline_at
        for lc in lifecycles(subject, events, REGISTER, only=INBOUND_ONLY)
    }


@given(
    history=histories(kinds=["prospect", "customer", "ambassador"]),
    calls=st.lists(instants(), min_size=1, max_size=3),
)
def test_an_outbound_contact_never_moves_a_deadline_later(history, calls):
    subject, events = history
    outbound = [
        parse_event(
            {
                "id": f"call-{n}",
                "type": "contact.made",
                "subject": subject,
                "occurred_at": when,
                "data": {"direction": "outbound"},
            },
            REGISTER,
        )
        for n, when in enumerate(calls)
    ]
    before = _deadlines(subject, events)
    after = _deadlines(subject, events + outbound)
    for activity, deadline in before.items():
        moved = after[activity]
        if deadline is None:
            continue  # open-ended already (never the case for these activities' rules)
        assert moved is not None, f"{activity}: an outbound contact removed the deadline"
        assert utc(moved) <= utc(deadline), f"{activity}: kept longer after a shop's contact"
