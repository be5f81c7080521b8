"""The bounded summary (worker/domain/summary.py) gives exactly the lifecycles of the whole
log: any order, any duplicates, any split into batches, long histories, any erasure
times, with the shipped register (a distributor's keep, a refusal's consent flag, dispute
cases) and a register whose rules read data on more types."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st
from test_properties import DISTRIBUTORS, NOW, REGISTER, TYPES_BY_KIND, histories, instants

from worker.domain.events import parse_event
from worker.domain.retention import is_held, lifecycles
from worker.domain.summary import fields_read, merge, spec, summarise, variant

CASES = [1, "1", "A", "B", None]


@st.composite
def data_for(draw, event_type: str) -> dict:
    data: dict = {}
    if event_type == "order.closed":
        distributor = draw(st.sampled_from(DISTRIBUTORS))
        if distributor:
            data["distributor"] = distributor
    if event_type == "candidate.rejected":
        keep = draw(st.sampled_from([True, False, None, "yes"]))
        if keep is not None:
            data["keep"] = keep
    if event_type == "contact.made":
        # the rules count only inbound contact for most activities: both must be kept
        data["direction"] = draw(st.sampled_from(["inbound", "outbound"]))
    if REGISTER.is_hold_event(event_type):
        case = draw(st.sampled_from(CASES))
        if case is not None:
            data["case"] = case
    if draw(st.booleans()):
        # a field no rule reads: it must not split the summary
        data["note"] = draw(st.sampled_from(["a", "b", "c"]))
    return data


@st.composite
def long_histories(draw, max_size: int = 40):
    """One subject's events: a random part, then maybe a long run of one type (a loyal
    visitor's hundreds of visits), with duplicates (same id, same event) mixed in."""
    subject, events = draw(histories(data_for=data_for, max_size=max_size))
    types = TYPES_BY_KIND[subject.split(":", 1)[0]]
    run = draw(st.integers(min_value=0, max_value=400))
    if run:
        event_type = draw(st.sampled_from(types))
        start = draw(st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2030, 1, 1)))
        step = timedelta(hours=draw(st.integers(min_value=0, max_value=24 * 40)))
        data = draw(data_for(event_type))
        for n in range(run):
            moment = (start.replace(tzinfo=UTC) + n * step).isoformat()
            raw = {"id": f"run-{n}", "type": event_type, "subject": subject, "occurred_at": moment}
            events.append(parse_event({**raw, "data": data}, REGISTER))
    duplicates = draw(st.lists(st.sampled_from(events), max_size=5))
    order = draw(st.permutations(events + duplicates))
    return subject, order


@st.composite
def erasure_times(draw) -> dict[str, datetime]:
    found = {}
    for activity in REGISTER.activities:
        if draw(st.booleans()):
            found[activity.id] = datetime.fromisoformat(draw(instants())).astimezone(UTC)
    return found


def _rows(subject, events, erased_at):
    found = lifecycles(subject, events, REGISTER, erased_at=erased_at)
    return [lc.as_row(NOW) for lc in found]


@given(history=long_histories(), erased_at=erasure_times())
def test_the_summary_gives_the_lifecycles_of_the_whole_log(history, erased_at):
    subject, events = history
    summary = list(summarise(events, REGISTER).values())
    if erased_at:
        # as ingestion reads them (worker/pipeline/ingest.py): after an erasure, the clock
        # may start at the earliest event since, which no bounded summary holds, so the
        # events after the earliest erasure come from the log
        since = min(erased_at.values())
        summary += [e for e in events if e.occurred_at > since]
    assert _rows(subject, summary, erased_at) == _rows(subject, events, erased_at)
    assert is_held(summary, REGISTER) == is_held(events, REGISTER)


@given(history=long_histories(), data=st.data())
def test_the_summary_kept_batch_by_batch_is_the_summary_of_the_whole_log(history, data):
    subject, events = history
    cuts = sorted(data.draw(st.lists(st.integers(0, len(events)), max_size=6)))
    summary: dict = {}
    for start, end in zip([0, *cuts], [*cuts, len(events)], strict=True):
        before = dict(summary)
        summary, changed = merge(summary, events[start:end], REGISTER)
        # only what changed is written back
        assert {k for k in summary if before.get(k) is not summary[k]} == changed
    whole = summarise(events, REGISTER)
    assert {k: e.id for k, e in summary.items()} == {k: e.id for k, e in whole.items()}
    assert _rows(subject, list(summary.values()), None) == _rows(subject, events, None)


@given(history=long_histories(max_size=10))
def test_a_long_history_keeps_a_bounded_summary(history):
    subject, events = history
    summary = summarise(events, REGISTER)
    # at most one event per type and variant: the variants here are the distributors,
    # the refusal flags and the dispute cases drawn, a handful each
    bound = sum(len(DISTRIBUTORS) + len(CASES) + 4 for _ in TYPES_BY_KIND[subject.split(":")[0]])
    assert len(summary) <= bound


def test_the_fields_read_are_those_the_rules_and_holds_read():
    fields = fields_read(REGISTER)
    assert fields["order.closed"] == ("distributor",)
    assert fields["candidate.rejected"] == ("keep",)
    assert fields["dispute.opened"] == ("case",)
    assert fields["dispute.closed"] == ("case",)
    assert "visit.recorded" not in fields
    assert len(spec(REGISTER)) == 16


def test_a_field_no_rule_reads_does_not_split_the_summary_and_no_value_is_stored():
    at = "2026-01-01T00:00:00+00:00"
    a = parse_event(
        {
            "id": "1",
            "type": "visit.recorded",
            "subject": "visitor:1",
            "occurred_at": at,
            "data": {"page": "a"},
        },
        REGISTER,
    )
    b = parse_event(
        {
            "id": "2",
            "type": "order.closed",
            "subject": "customer:1",
            "occurred_at": at,
            "data": {"distributor": "DIST-NORD"},
        },
        REGISTER,
    )
    assert variant(a, REGISTER) == ""
    assert "DIST" not in variant(b, REGISTER) and len(variant(b, REGISTER)) == 32


def test_a_prospect_only_the_shop_called_keeps_its_earliest_call_in_the_summary():
    # No inbound contact ever: the clock runs from the earliest contact (the data was
    # collected by then), which a summary of latest events alone would lose.
    calls = [
        parse_event(
            {
                "id": f"call-{n}",
                "type": "contact.made",
                "subject": "prospect:7",
                "occurred_at": at,
                "data": {"direction": "outbound"},
            },
            REGISTER,
        )
        for n, at in enumerate(
            ["2024-05-02T10:00:00+02:00", "2023-02-14T09:00:00+01:00", "2025-06-12T15:00:00+02:00"]
        )
    ]
    summary = summarise(calls, REGISTER)
    rows = _rows("prospect:7", list(summary.values()), None)
    assert rows == _rows("prospect:7", calls, None)
    [prospect] = [r for r in rows if r["activity"] == "website.prospects"]
    assert str(prospect["anchor_at"]).startswith("2023-02-14"), prospect
