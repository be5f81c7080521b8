"""Every rule of the NEGOMARKETS register, told as the shop's events and the deadlines they give.

Deadlines are written out by hand from the register (keep after the latest clock
event, in Europe/Paris, calendar-wise, time of day kept), never computed with
the code under test.
"""

from __future__ import annotations

import pendulum
import pytest

from worker.domain.events import EventRefused, parse_event
from worker.domain.register_file import default_register_path, parse_register
from worker.domain.retention import Lifecycle, State, is_held, lifecycle_for, lifecycles


def at(text: str) -> pendulum.DateTime:
    return pendulum.parse(text)


def iso(moment: pendulum.DateTime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def lifecycle(register, subject: str, activity: str, *events) -> Lifecycle:
    found = lifecycle_for(subject, register.activity(activity), events, register)
    assert found is not None, f"no {activity} lifecycle for {subject}"
    return found


def deadline(register, subject: str, activity: str, *events) -> str | None:
    return iso(lifecycle(register, subject, activity, *events).deadline_at)


def activities(register, subject: str, *events) -> list[str]:
    return [lc.activity for lc in lifecycles(subject, events, register)]


def sent_with(event_type: str) -> dict[str, str]:
    """The data a clock event carries when the person's own doing renews the clock."""
    return {"direction": "inbound"} if event_type == "contact.made" else {}


# website.navigation: 13 months after the latest visit (CNIL, cookies)


@pytest.mark.parametrize("kind", ["visitor", "prospect", "customer"])
def test_navigation_data_is_kept_13_months_after_the_visit(register, event, kind):
    visit = event("visit.recorded", f"{kind}:1", "2025-09-14T18:22:05+02:00")
    lc = lifecycle(register, f"{kind}:1", "website.navigation", visit)
    assert iso(lc.anchor_at) == "2025-09-14T18:22:05+02:00"
    assert iso(lc.deadline_at) == "2026-10-14T18:22:05+02:00"
    assert lc.then == "delete"


def test_a_later_visit_restarts_the_navigation_clock(register, event):
    first = event("visit.recorded", "visitor:v-1", "2025-01-10T08:00:00+01:00")
    second = event("visit.recorded", "visitor:v-1", "2025-06-01T12:00:00+02:00")
    assert deadline(register, "visitor:v-1", "website.navigation", second, first) == (
        "2026-07-01T12:00:00+02:00"
    )


# website.prospects: 3 years after the latest contact


def test_a_prospect_is_kept_3_years_after_the_last_contact(register, event):
    contact = event(
        "contact.made", "prospect:p-2001", "2023-05-10T14:00:00+02:00", direction="inbound"
    )
    lc = lifecycle(register, "prospect:p-2001", "website.prospects", contact)
    assert iso(lc.deadline_at) == "2026-05-10T14:00:00+02:00"
    assert lc.then == "anonymise"


def test_a_new_contact_gives_the_prospect_3_more_years(register, event):
    events = [
        event("contact.made", "prospect:p-1", "2023-05-10T14:00:00+02:00", direction="inbound"),
        event("contact.made", "prospect:p-1", "2025-11-03T11:45:00+01:00", direction="inbound"),
    ]
    assert deadline(register, "prospect:p-1", "website.prospects", *events) == (
        "2028-11-03T11:45:00+01:00"
    )


def test_a_customer_contact_opens_no_prospect_lifecycle(register, event):
    contact = event("contact.made", "customer:42", "2023-05-10T14:00:00+02:00", direction="inbound")
    assert "website.prospects" not in activities(register, "customer:42", contact)


# website.accounts: 5 years after the latest of account.closed, order.closed, contact.made

ACCOUNT_EVENTS = {
    "account.closed": "2021-12-01T12:00:00+01:00",
    "order.closed": "2021-06-01T10:00:00+02:00",
    "contact.made": "2021-03-15T09:00:00+01:00",
}


@pytest.mark.parametrize("latest", sorted(ACCOUNT_EVENTS))
def test_an_online_account_is_kept_5_years_after_its_latest_event(register, event, latest):
    events = [event(t, "customer:42", when, **sent_with(t)) for t, when in ACCOUNT_EVENTS.items()]
    events.append(event(latest, "customer:42", "2022-03-15T09:00:00+01:00", **sent_with(latest)))
    lc = lifecycle(register, "customer:42", "website.accounts", *events)
    assert iso(lc.anchor_at) == "2022-03-15T09:00:00+01:00"
    assert iso(lc.deadline_at) == "2027-03-15T09:00:00+01:00"
    assert lc.then == "anonymise"


# crm.customers: 5 years after the latest order or contact


def test_a_customer_relationship_is_kept_5_years_after_the_last_order_or_contact(register, event):
    events = [
        event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00"),
        event("contact.made", "customer:42", "2021-03-28T01:30:00+01:00", direction="inbound"),
    ]
    lc = lifecycle(register, "customer:42", "crm.customers", *events)
    assert iso(lc.anchor_at) == "2021-03-28T01:30:00+01:00"
    assert iso(lc.deadline_at) == "2026-03-28T01:30:00+01:00"
    assert lc.then == "anonymise"


def test_closing_an_account_does_not_touch_the_customer_relationship(register, event):
    closed = event("account.closed", "customer:44", "2024-10-27T02:30:00+01:00")
    assert activities(register, "customer:44", closed) == ["website.accounts"]


# crm.invoices: 10 years, a legal obligation that an erasure request does not end


@pytest.mark.parametrize("kind", ["customer", "ambassador"])
def test_invoices_are_kept_10_years(register, event, kind):
    invoice = event("invoice.issued", f"{kind}:7", "2020-02-29T10:05:00+01:00")
    lc = lifecycle(register, f"{kind}:7", "crm.invoices", invoice)
    assert iso(lc.deadline_at) == "2030-02-28T10:05:00+01:00"
    assert lc.then == "delete"


def test_an_erasure_request_does_not_end_the_legal_keeping_of_invoices(register, event):
    invoice = event("invoice.issued", "customer:44", "2019-07-01T12:00:00+02:00")
    erasure = event("erasure.requested", "customer:44", "2026-10-01T16:00:00+02:00")
    lc = lifecycle(register, "customer:44", "crm.invoices", invoice, erasure)
    assert iso(lc.anchor_at) == "2019-07-01T12:00:00+02:00"
    assert iso(lc.deadline_at) == "2029-07-01T12:00:00+02:00"
    assert lc.state(at("2026-11-26T00:00:00+01:00")) is State.active


def test_an_erasure_request_alone_opens_no_invoice_lifecycle(register, event):
    erasure = event("erasure.requested", "customer:44", "2026-10-01T16:00:00+02:00")
    assert "crm.invoices" not in activities(register, "customer:44", erasure)


# ambassadors: 5 years after the contract ended or the last contact


def test_an_ambassador_is_kept_5_years_after_the_contract_ended(register, event):
    events = [
        event("contact.made", "ambassador:a-7", "2020-11-15T10:00:00+01:00", direction="inbound"),
        event("ambassador.contract_ended", "ambassador:a-7", "2021-01-31T18:00:00+01:00"),
    ]
    lc = lifecycle(register, "ambassador:a-7", "ambassadors", *events)
    assert iso(lc.deadline_at) == "2026-01-31T18:00:00+01:00"
    assert lc.then == "anonymise"


def test_a_contact_after_the_contract_restarts_the_ambassador_clock(register, event):
    events = [
        event("ambassador.contract_ended", "ambassador:a-7", "2021-01-31T18:00:00+01:00"),
        event("contact.made", "ambassador:a-7", "2022-07-14T11:00:00+02:00", direction="inbound"),
    ]
    assert deadline(register, "ambassador:a-7", "ambassadors", *events) == (
        "2027-07-14T11:00:00+02:00"
    )


# newsletter: kept while subscribed, erased at unsubscription, reopened by a new subscription

SUBSCRIBED = "2019-01-07T08:00:00+01:00"
UNSUBSCRIBED = "2024-05-01T20:12:00+02:00"
SUBSCRIBED_AGAIN = "2025-02-01T09:00:00+01:00"


def test_an_active_subscription_has_no_deadline(register, event):
    subscribed = event("newsletter.subscribed", "visitor:v-1002", SUBSCRIBED)
    lc = lifecycle(register, "visitor:v-1002", "newsletter", subscribed)
    assert iso(lc.anchor_at) == SUBSCRIBED
    assert lc.deadline_at is None
    assert lc.state(at("2099-01-01T00:00:00Z")) is State.active


def test_unsubscribing_makes_the_newsletter_data_due_at_once(register, event):
    events = [
        event("newsletter.subscribed", "customer:42", SUBSCRIBED),
        event("newsletter.unsubscribed", "customer:42", UNSUBSCRIBED),
    ]
    lc = lifecycle(register, "customer:42", "newsletter", *events)
    assert iso(lc.anchor_at) == UNSUBSCRIBED
    assert iso(lc.deadline_at) == UNSUBSCRIBED
    assert lc.state(at(UNSUBSCRIBED)) is State.due
    assert lc.then == "delete"


def test_subscribing_again_reopens_the_newsletter(register, event):
    events = [
        event("newsletter.subscribed", "customer:42", SUBSCRIBED),
        event("newsletter.unsubscribed", "customer:42", UNSUBSCRIBED),
        event("newsletter.subscribed", "customer:42", SUBSCRIBED_AGAIN),
    ]
    lc = lifecycle(register, "customer:42", "newsletter", *events)
    assert iso(lc.anchor_at) == SUBSCRIBED_AGAIN
    assert lc.deadline_at is None


def test_an_unsubscription_arriving_after_the_resubscription_still_loses(register, event):
    # Events may arrive out of order: the latest occurred_at decides, not the arrival.
    events = [
        event("newsletter.subscribed", "customer:42", SUBSCRIBED_AGAIN),
        event("newsletter.subscribed", "customer:42", SUBSCRIBED),
        event("newsletter.unsubscribed", "customer:42", UNSUBSCRIBED),
    ]
    assert deadline(register, "customer:42", "newsletter", *events) is None


def test_unsubscribing_at_the_very_instant_of_subscribing_ends_the_subscription(register, event):
    events = [
        event("newsletter.unsubscribed", "customer:42", UNSUBSCRIBED),
        event("newsletter.subscribed", "customer:42", UNSUBSCRIBED),
    ]
    assert deadline(register, "customer:42", "newsletter", *events) == UNSUBSCRIBED


def test_an_erasure_request_ends_an_active_subscription(register, event):
    events = [
        event("newsletter.subscribed", "visitor:v-1", SUBSCRIBED),
        event("erasure.requested", "visitor:v-1", "2026-10-01T16:00:00+02:00"),
    ]
    assert deadline(register, "visitor:v-1", "newsletter", *events) == ("2026-10-01T16:00:00+02:00")


# recruitment: erased at rejection, unless the candidate consented (then 2 years)


@pytest.mark.parametrize("data", [{"keep": False}, {}])
def test_a_rejected_candidate_who_did_not_consent_is_erased_at_rejection(register, event, data):
    events = [
        event("candidate.rejected", "candidate:c-1", "2026-09-20T10:00:00+02:00", **data),
        event("candidate.applied", "candidate:c-1", "2026-09-01T10:00:00+02:00"),
    ]
    lc = lifecycle(register, "candidate:c-1", "recruitment", *events)
    assert iso(lc.anchor_at) == "2026-09-20T10:00:00+02:00"
    assert iso(lc.deadline_at) == "2026-09-20T10:00:00+02:00"
    assert lc.state(at("2026-09-20T10:00:00+02:00")) is State.due
    assert lc.then == "delete"


def test_a_rejected_candidate_who_asked_to_be_kept_is_kept_2_years(register, event):
    events = [
        event("candidate.applied", "candidate:c-2", "2025-02-10T10:00:00+01:00"),
        event("candidate.rejected", "candidate:c-2", "2025-03-03T10:00:00+01:00", keep=True),
    ]
    assert deadline(register, "candidate:c-2", "recruitment", *events) == (
        "2027-03-03T10:00:00+01:00"
    )


def test_a_keep_flag_that_is_not_true_is_no_consent(register, event):
    events = [
        event("candidate.rejected", "candidate:c-2", "2025-03-03T10:00:00+01:00", keep="yes"),
    ]
    assert deadline(register, "candidate:c-2", "recruitment", *events) == (
        "2025-03-03T10:00:00+01:00"
    )


@pytest.mark.parametrize("consented", ["2024-04-10T09:00:00+02:00", "2024-04-20T09:00:00+02:00"])
def test_a_candidate_who_consented_is_kept_2_years_after_the_last_contact(
    register, event, consented
):
    events = [
        event("candidate.applied", "candidate:c-3", "2024-04-02T09:00:00+02:00"),
        event("candidate.consented", "candidate:c-3", consented),
        event("candidate.rejected", "candidate:c-3", "2024-04-19T09:00:00+02:00"),
    ]
    lc = lifecycle(register, "candidate:c-3", "recruitment", *events)
    assert iso(lc.anchor_at) == "2024-04-19T09:00:00+02:00"
    assert iso(lc.deadline_at) == "2026-04-19T09:00:00+02:00"


def test_an_open_application_is_kept_2_years_after_the_last_contact(register, event):
    events = [
        event("candidate.applied", "candidate:c-4", "2024-04-02T09:00:00+02:00"),
        event("contact.made", "candidate:c-4", "2024-11-05T15:00:00+01:00", direction="inbound"),
    ]
    assert deadline(register, "candidate:c-4", "recruitment", *events) == (
        "2026-11-05T15:00:00+01:00"
    )


def test_a_new_application_after_a_rejection_restarts_the_clock(register, event):
    events = [
        event("candidate.rejected", "candidate:c-5", "2024-04-19T09:00:00+02:00"),
        event("candidate.applied", "candidate:c-5", "2025-01-06T09:00:00+01:00"),
    ]
    assert deadline(register, "candidate:c-5", "recruitment", *events) == (
        "2027-01-06T09:00:00+01:00"
    )


def test_an_erasure_request_ends_recruitment_even_with_consent(register, event):
    events = [
        event("candidate.rejected", "candidate:c-2", "2025-03-03T10:00:00+01:00", keep=True),
        event("erasure.requested", "candidate:c-2", "2025-09-01T10:00:00+02:00"),
    ]
    assert deadline(register, "candidate:c-2", "recruitment", *events) == (
        "2025-09-01T10:00:00+02:00"
    )


def test_a_consent_alone_starts_the_clock_so_nothing_is_kept_forever(register, event):
    consent = event("candidate.consented", "candidate:c-9", "2025-06-01T09:00:00+02:00")
    assert deadline(register, "candidate:c-9", "recruitment", consent) == (
        "2027-06-01T09:00:00+02:00"
    )


# distributors.orders: each distributor sets its own duration, 5 years by default


@pytest.mark.parametrize(
    ("distributor", "expected"),
    [
        ("DIST-NORD", "2026-12-31T23:59:00+01:00"),
        ("DIST-SUD", "2028-12-31T23:59:00+01:00"),
        ("DIST-AUTRE", "2028-12-31T23:59:00+01:00"),
        # as the shop may spell it: not the 5-year default, 2 years late
        ("dist-nord ", "2026-12-31T23:59:00+01:00"),
    ],
)
def test_a_distributor_customer_is_kept_as_long_as_its_distributor_says(
    register, event, distributor, expected
):
    order = event(
        "order.closed",
        "distributor-customer:DN-501",
        "2023-12-31T23:59:00+01:00",
        distributor=distributor,
    )
    lc = lifecycle(register, "distributor-customer:DN-501", "distributors.orders", order)
    assert iso(lc.deadline_at) == expected
    assert lc.then == "anonymise"


def test_an_order_without_distributor_gets_the_default_5_years(register, event):
    order = event("order.closed", "distributor-customer:XX-9", "2023-12-31T23:59:00+01:00")
    assert deadline(register, "distributor-customer:XX-9", "distributors.orders", order) == (
        "2028-12-31T23:59:00+01:00"
    )


def test_two_distributors_closing_at_the_same_instant_keep_the_longer(register, event):
    subject = "distributor-customer:DN-9"
    events = [
        event("order.closed", subject, "2023-12-31T23:59:00+01:00", distributor="DIST-NORD"),
        event("order.closed", subject, "2023-12-31T23:59:00+01:00", distributor="DIST-SUD"),
    ]
    assert deadline(register, subject, "distributors.orders", *events) == (
        "2028-12-31T23:59:00+01:00"
    )


def test_distributor_customers_open_no_controller_lifecycle(register, event):
    order = event("order.closed", "distributor-customer:DN-501", "2023-12-31T23:59:00+01:00")
    assert activities(register, "distributor-customer:DN-501", order) == ["distributors.orders"]


# sales: 5 years after the order


def test_a_sale_is_kept_5_years_after_the_order(register, event):
    order = event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00")
    lc = lifecycle(register, "customer:42", "sales", order)
    assert iso(lc.deadline_at) == "2025-02-28T10:00:00+01:00"
    assert lc.then == "anonymise"


def test_a_closed_order_opens_every_customer_activity_it_touches(register, event):
    order = event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00")
    assert activities(register, "customer:42", order) == [
        "crm.customers",
        "sales",
        "website.accounts",
    ]


# disputes: held while a dispute is open, whatever the deadline

ORDER_43 = "2021-01-31T23:30:00+01:00"
NOW = "2026-11-26T00:00:00+01:00"


def test_an_open_dispute_holds_every_lifecycle_of_the_subject(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("invoice.issued", "customer:43", ORDER_43),
        event("dispute.opened", "customer:43", "2025-06-01T09:00:00+02:00", case="LIT-77"),
    ]
    found = lifecycles("customer:43", events, register)
    assert [lc.activity for lc in found] == [
        "crm.customers",
        "crm.invoices",
        "sales",
        "website.accounts",
    ]
    for lc in found:
        assert lc.held
        assert lc.state(at(NOW)) is State.held
    sales = next(lc for lc in found if lc.activity == "sales")
    assert iso(sales.deadline_at) == "2026-01-31T23:30:00+01:00"


def test_closing_the_dispute_lifts_the_hold(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.opened", "customer:43", "2025-06-01T09:00:00+02:00"),
        event("dispute.closed", "customer:43", "2026-02-01T09:00:00+01:00"),
    ]
    lc = lifecycle(register, "customer:43", "sales", *events)
    assert not lc.held
    assert lc.state(at(NOW)) is State.due


def test_a_new_dispute_holds_the_subject_again(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.opened", "customer:43", "2025-06-01T09:00:00+02:00"),
        event("dispute.closed", "customer:43", "2026-02-01T09:00:00+01:00"),
        event("dispute.opened", "customer:43", "2026-03-01T09:00:00+01:00"),
    ]
    assert lifecycle(register, "customer:43", "sales", *events).state(at(NOW)) is State.held


def test_closing_one_of_two_open_disputes_keeps_the_hold_until_the_other_closes(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.opened", "customer:43", "2025-01-01T09:00:00+01:00", case="D1"),
        event("dispute.opened", "customer:43", "2025-02-01T09:00:00+01:00", case="D2"),
        event("dispute.closed", "customer:43", "2025-03-01T09:00:00+01:00", case="D1"),
    ]
    assert lifecycle(register, "customer:43", "sales", *events).held
    closed = event("dispute.closed", "customer:43", "2025-04-01T09:00:00+02:00", case="D2")
    assert not lifecycle(register, "customer:43", "sales", *events, closed).held


def test_a_closing_that_names_no_case_closes_every_dispute(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.opened", "customer:43", "2025-01-01T09:00:00+01:00", case="D1"),
        event("dispute.opened", "customer:43", "2025-02-01T09:00:00+01:00", case="D2"),
        event("dispute.closed", "customer:43", "2025-03-01T09:00:00+01:00"),
    ]
    assert not lifecycle(register, "customer:43", "sales", *events).held


def test_a_closing_that_arrives_before_its_opening_still_lifts_the_hold(register, event):
    events = [
        event("dispute.closed", "customer:43", "2026-02-01T09:00:00+01:00"),
        event("dispute.opened", "customer:43", "2025-06-01T09:00:00+02:00"),
        event("order.closed", "customer:43", ORDER_43),
    ]
    assert not lifecycle(register, "customer:43", "sales", *events).held


def test_a_closing_without_any_opening_holds_nothing(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.closed", "customer:43", "2026-02-01T09:00:00+01:00"),
    ]
    assert not is_held(events, register)


def test_a_dispute_opened_and_closed_at_the_same_instant_holds_nothing(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.opened", "customer:43", "2025-06-01T09:00:00+02:00"),
        event("dispute.closed", "customer:43", "2025-06-01T07:00:00Z"),
    ]
    assert not lifecycle(register, "customer:43", "sales", *events).held


def test_a_dispute_about_someone_else_holds_nothing(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.opened", "customer:99", "2025-06-01T09:00:00+02:00"),
    ]
    assert not lifecycle(register, "customer:43", "sales", *events).held


def test_a_dispute_alone_opens_no_lifecycle(register, event):
    opened = event("dispute.opened", "customer:43", "2025-06-01T09:00:00+02:00")
    assert lifecycles("customer:43", [opened], register) == []


def test_a_dispute_holds_data_even_after_an_erasure_request(register, event):
    events = [
        event("order.closed", "customer:43", ORDER_43),
        event("dispute.opened", "customer:43", "2025-06-01T09:00:00+02:00"),
        event("erasure.requested", "customer:43", "2025-07-01T09:00:00+02:00"),
    ]
    lc = lifecycle(register, "customer:43", "sales", *events)
    assert iso(lc.deadline_at) == "2025-07-01T09:00:00+02:00"
    assert lc.state(at(NOW)) is State.held


# erasure.requested: every activity not kept by law is due at once

ERASURE = "2026-10-01T16:00:00+02:00"


def test_an_erasure_request_makes_every_non_legal_activity_due_at_once(register, event):
    events = [
        event("visit.recorded", "customer:44", "2026-09-30T10:00:00+02:00"),
        event("account.closed", "customer:44", "2024-10-27T02:30:00+01:00"),
        event("order.closed", "customer:44", "2026-09-01T10:00:00+02:00"),
        event("invoice.issued", "customer:44", "2026-09-01T10:05:00+02:00"),
        event("newsletter.subscribed", "customer:44", "2019-01-07T08:00:00+01:00"),
        event("erasure.requested", "customer:44", ERASURE),
    ]
    found = {lc.activity: lc for lc in lifecycles("customer:44", events, register)}
    assert sorted(found) == [
        "crm.customers",
        "crm.invoices",
        "newsletter",
        "sales",
        "website.accounts",
        "website.navigation",
    ]
    for activity, lc in found.items():
        if activity == "crm.invoices":
            assert iso(lc.deadline_at) == "2036-09-01T10:05:00+02:00"
            assert lc.state(at(ERASURE)) is State.active
        else:
            assert iso(lc.anchor_at) == ERASURE, activity
            assert iso(lc.deadline_at) == ERASURE, activity
            assert lc.state(at(ERASURE)) is State.due, activity


def test_an_erasure_request_wins_over_an_order_at_the_same_instant(register, event):
    events = [
        event("erasure.requested", "customer:44", ERASURE),
        event("order.closed", "customer:44", ERASURE),
    ]
    assert deadline(register, "customer:44", "sales", *events) == ERASURE


def test_an_order_after_an_erasure_request_starts_a_new_relationship(register, event):
    events = [
        event("order.closed", "customer:44", "2026-09-01T10:00:00+02:00"),
        event("erasure.requested", "customer:44", ERASURE),
        event("order.closed", "customer:44", "2026-11-02T10:00:00+01:00"),
    ]
    assert deadline(register, "customer:44", "sales", *events) == "2031-11-02T10:00:00+01:00"


@pytest.mark.parametrize("activity", ["crm.customers", "website.accounts"])
def test_a_contact_after_an_erasure_request_keeps_nothing_but_a_new_order_does(
    register, event, activity
):
    # the shop answers the request the same afternoon: the old data must still go
    events = [
        event("order.closed", "customer:301", "2024-01-10T10:00:00+01:00"),
        event("erasure.requested", "customer:301", ERASURE),
        event("contact.made", "customer:301", "2026-11-20T15:00:00+01:00", direction="inbound"),
    ]
    assert deadline(register, "customer:301", activity, *events) == ERASURE
    order = event("order.closed", "customer:301", "2026-12-01T10:00:00+01:00")
    assert deadline(register, "customer:301", activity, *events, order) == (
        "2031-12-01T10:00:00+01:00"
    )


def test_an_erasure_request_from_a_prospect_ends_its_prospect_data(register, event):
    events = [
        event("contact.made", "prospect:p-2002", "2025-11-03T11:45:00+01:00", direction="inbound"),
        event("erasure.requested", "prospect:p-2002", "2026-01-15T09:30:00+01:00"),
    ]
    assert deadline(register, "prospect:p-2002", "website.prospects", *events) == (
        "2026-01-15T09:30:00+01:00"
    )


@pytest.mark.parametrize(
    ("activity", "subject", "clock_event"),
    [
        ("website.navigation", "visitor:v-7", "visit.recorded"),
        ("website.prospects", "prospect:p-7", "contact.made"),
    ],
)
def test_activity_after_an_erasure_request_does_not_keep_what_it_asked_to_erase(
    register, event, activity, subject, clock_event
):
    # the visitor browses on the same afternoon (the prospect gets the shop's reply):
    # the logs of the months before must still go at the next sweep
    events = [
        event(clock_event, subject, "2026-06-01T10:00:00+02:00", **sent_with(clock_event)),
        event("erasure.requested", subject, ERASURE),
        event(clock_event, subject, "2026-10-01T18:00:00+02:00", **sent_with(clock_event)),
    ]
    assert deadline(register, subject, activity, *events) == ERASURE


def test_after_an_erasure_only_later_events_start_a_new_lifecycle(register, event):
    erased_at = at("2026-10-02T03:00:00+02:00")  # the sweep after the request
    before = [
        event("visit.recorded", "visitor:v-7", "2026-06-01T10:00:00+02:00"),
        event("erasure.requested", "visitor:v-7", ERASURE),
        event("visit.recorded", "visitor:v-7", "2026-10-01T18:00:00+02:00"),
    ]
    navigation = register.activity("website.navigation")
    # nothing since the erasure: no lifecycle to store, the erased one stays as it is
    assert lifecycle_for("visitor:v-7", navigation, before, register, erased_at) is None
    again = event("visit.recorded", "visitor:v-7", "2026-11-15T09:00:00+01:00")
    found = lifecycle_for("visitor:v-7", navigation, [*before, again], register, erased_at)
    assert found is not None and iso(found.deadline_at) == "2027-12-15T09:00:00+01:00"


def test_a_contact_after_an_erased_customer_file_gets_a_deadline_of_its_own(register, event):
    # the reply to the request keeps nothing, but once the file is erased a new
    # contact is new data, which must not stay without a deadline
    events = [
        event("order.closed", "customer:301", "2024-01-10T10:00:00+01:00"),
        event("erasure.requested", "customer:301", ERASURE),
        event("contact.made", "customer:301", "2026-10-01T18:00:00+02:00", direction="inbound"),
        event("contact.made", "customer:301", "2027-03-01T10:00:00+01:00", direction="inbound"),
    ]
    erased = {"crm.customers": at("2026-10-02T03:00:00+02:00")}
    found = {lc.activity: lc for lc in lifecycles("customer:301", events, register, None, erased)}
    assert iso(found["crm.customers"].deadline_at) == "2032-03-01T10:00:00+01:00"
    assert iso(found["sales"].deadline_at) == ERASURE  # not erased yet: still due


# calendar edges: Europe/Paris, calendar-wise, time of day kept


def test_five_years_after_29_february_is_28_february(register, event):
    order = event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00")
    assert deadline(register, "customer:42", "sales", order) == "2025-02-28T10:00:00+01:00"


@pytest.mark.parametrize(
    ("visit", "expected"),
    [
        ("2025-01-31T12:00:00+01:00", "2026-02-28T12:00:00+01:00"),
        ("2023-01-31T12:00:00+01:00", "2024-02-29T12:00:00+01:00"),
        ("2024-01-29T12:00:00+01:00", "2025-02-28T12:00:00+01:00"),
        ("2024-02-28T12:00:00+01:00", "2025-03-28T12:00:00+01:00"),
        ("2024-08-31T12:00:00+02:00", "2025-09-30T12:00:00+02:00"),
        ("2024-12-31T23:59:59+01:00", "2026-01-31T23:59:59+01:00"),
        ("2025-03-31T00:00:00+02:00", "2026-04-30T00:00:00+02:00"),
    ],
)
def test_13_months_after_a_month_end_is_the_end_of_the_shorter_month(
    register, event, visit, expected
):
    seen = event("visit.recorded", "visitor:v-1", visit)
    assert deadline(register, "visitor:v-1", "website.navigation", seen) == expected


@pytest.mark.parametrize(
    ("activity", "subject", "event_type", "expected"),
    [
        ("crm.invoices", "customer:42", "invoice.issued", "2034-02-28T15:00:00+01:00"),
        ("recruitment", "candidate:c-1", "candidate.applied", "2026-02-28T15:00:00+01:00"),
        ("website.prospects", "prospect:p-1", "contact.made", "2027-02-28T15:00:00+01:00"),
        ("ambassadors", "ambassador:a-1", "contact.made", "2029-02-28T15:00:00+01:00"),
    ],
)
def test_a_leap_day_anchor_lands_on_28_february(
    register, event, activity, subject, event_type, expected
):
    seen = event(event_type, subject, "2024-02-29T15:00:00+01:00", **sent_with(event_type))
    assert deadline(register, subject, activity, seen) == expected


def test_a_leap_day_anchor_with_a_distributor_lands_on_28_february(register, event):
    order = event(
        "order.closed",
        "distributor-customer:DN-1",
        "2024-02-29T15:00:00+01:00",
        distributor="DIST-NORD",
    )
    assert deadline(register, "distributor-customer:DN-1", "distributors.orders", order) == (
        "2027-02-28T15:00:00+01:00"
    )


def test_13_months_can_land_on_29_february_of_a_leap_year(register, event):
    visit = event("visit.recorded", "visitor:v-1", "2027-01-29T15:00:00+01:00")
    assert deadline(register, "visitor:v-1", "website.navigation", visit) == (
        "2028-02-29T15:00:00+01:00"
    )


def test_a_deadline_keeps_the_time_of_day_across_the_spring_change(register, event):
    # 2025-03-30 02:00 Paris jumps to 03:00: the anchor is in winter time, the deadline in summer.
    visit = event("visit.recorded", "visitor:v-1", "2025-03-30T01:30:00+01:00")
    assert deadline(register, "visitor:v-1", "website.navigation", visit) == (
        "2026-04-30T01:30:00+02:00"
    )


def test_an_anchor_just_after_the_spring_change_keeps_its_time_in_winter(register, event):
    # 2030 changes to summer time on 31 March, so 30 March 2030 is still winter time.
    order = event("order.closed", "customer:42", "2025-03-30T03:30:00+02:00")
    assert deadline(register, "customer:42", "sales", order) == "2030-03-30T03:30:00+01:00"


def test_an_anchor_given_in_utc_on_the_spring_night_is_seen_in_paris_first(register, event):
    order = event("order.closed", "customer:42", "2025-03-30T01:30:00Z")  # 03:30 in Paris
    lc = lifecycle(register, "customer:42", "sales", order)
    assert iso(lc.anchor_at) == "2025-03-30T03:30:00+02:00"
    assert iso(lc.deadline_at) == "2030-03-30T03:30:00+01:00"


@pytest.mark.parametrize(
    "visit",
    [
        "2025-10-26T02:30:00+02:00",  # first 02:30 of the autumn night, summer time
        "2025-10-26T02:30:00+01:00",  # second 02:30, an hour later, winter time
        "2025-10-26T00:30:00Z",  # the first one written in UTC
    ],
)
def test_a_deadline_keeps_the_time_of_day_across_the_autumn_change(register, event, visit):
    seen = event("visit.recorded", "visitor:v-1", visit)
    assert deadline(register, "visitor:v-1", "website.navigation", seen) == (
        "2026-11-26T02:30:00+01:00"
    )


def test_a_deadline_in_the_missing_spring_hour_moves_forward_never_back(register, event):
    # 2026-03-29 02:30 does not exist in Paris: the deadline is the instant 02:30
    # winter time would have been (03:30 summer time), not an hour earlier.
    order = event("order.closed", "customer:42", "2021-03-29T02:30:00+02:00")
    lc = lifecycle(register, "customer:42", "sales", order)
    assert iso(lc.deadline_at) == "2026-03-29T03:30:00+02:00"
    assert lc.state(at("2026-03-29T01:15:00Z")) is State.active


def test_a_deadline_in_the_repeated_autumn_hour_takes_the_later_one(register, event):
    # 2026-10-25 02:30 happens twice in Paris: erasing at the first would be an hour early.
    visit = event("visit.recorded", "visitor:v-1", "2025-09-25T02:30:00+02:00")
    lc = lifecycle(register, "visitor:v-1", "website.navigation", visit)
    assert iso(lc.deadline_at) == "2026-10-25T02:30:00+01:00"
    assert lc.state(at("2026-10-25T02:30:00+02:00")) is State.active


def test_an_event_at_half_past_eleven_utc_on_new_years_eve_is_new_year_in_paris(register, event):
    contact = event("contact.made", "prospect:p-1", "2024-12-31T23:30:00Z", direction="inbound")
    lc = lifecycle(register, "prospect:p-1", "website.prospects", contact)
    assert iso(lc.anchor_at) == "2025-01-01T00:30:00+01:00"
    assert iso(lc.deadline_at) == "2028-01-01T00:30:00+01:00"


@pytest.mark.parametrize(
    ("ordered", "anchor", "expected"),
    [
        ("2024-02-29T15:00:00-05:00", "2024-02-29T21:00:00+01:00", "2029-02-28T21:00:00+01:00"),
        ("2024-02-29T23:30:00-05:00", "2024-03-01T05:30:00+01:00", "2029-03-01T05:30:00+01:00"),
        ("2025-07-14T22:30:00Z", "2025-07-15T00:30:00+02:00", "2030-07-15T00:30:00+02:00"),
        ("2025-01-31T23:30:00Z", "2025-02-01T00:30:00+01:00", "2030-02-01T00:30:00+01:00"),
        ("2025-08-01T06:00:00+09:00", "2025-07-31T23:00:00+02:00", "2030-07-31T23:00:00+02:00"),
    ],
)
def test_an_event_from_another_offset_is_converted_to_paris_before_counting(
    register, event, ordered, anchor, expected
):
    order = event("order.closed", "customer:45", ordered)
    lc = lifecycle(register, "customer:45", "sales", order)
    assert iso(lc.anchor_at) == anchor
    assert iso(lc.deadline_at) == expected


def test_13_months_from_31_january_utc_evening_count_from_1_february_in_paris(register, event):
    visit = event("visit.recorded", "visitor:v-1", "2025-01-31T23:30:00Z")
    assert deadline(register, "visitor:v-1", "website.navigation", visit) == (
        "2026-03-01T00:30:00+01:00"
    )


def test_the_latest_event_is_the_latest_instant_not_the_latest_wall_clock(register, event):
    events = [
        event(
            "contact.made", "prospect:p-1", "2025-06-01T10:00:00-05:00", direction="inbound"
        ),  # 17:00 Paris
        event("contact.made", "prospect:p-1", "2025-06-01T16:00:00+02:00", direction="inbound"),
    ]
    lc = lifecycle(register, "prospect:p-1", "website.prospects", *events)
    assert iso(lc.anchor_at) == "2025-06-01T17:00:00+02:00"


# states and rows


def test_a_lifecycle_is_active_before_its_deadline_and_due_from_it(register, event):
    order = event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00")
    lc = lifecycle(register, "customer:42", "sales", order)
    assert lc.state(at("2025-02-28T09:59:59+01:00")) is State.active
    assert lc.state(at("2025-02-28T10:00:00+01:00")) is State.due
    assert lc.state(at("2026-11-26T00:00:00+01:00")) is State.due


def test_a_row_has_exactly_the_fields_of_the_contract(register, event):
    order = event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00")
    row = lifecycle(register, "customer:42", "sales", order).as_row(at(NOW))
    assert row == {
        "subject": "customer:42",
        "activity": "sales",
        "anchor_at": "2020-02-29T10:00:00+01:00",
        "deadline_at": "2025-02-28T10:00:00+01:00",
        "state": "due",
        "then": "anonymise",
    }


def test_events_of_other_subjects_are_ignored(register, event):
    events = [
        event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00"),
        event("order.closed", "customer:43", "2023-02-28T10:00:00+01:00"),
    ]
    assert deadline(register, "customer:42", "sales", *events) == "2025-02-28T10:00:00+01:00"


def test_the_same_event_delivered_twice_counts_once(register, event):
    order = event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00")
    assert lifecycles("customer:42", [order, order, order], register) == lifecycles(
        "customer:42", [order], register
    )


def test_a_second_event_with_the_same_id_does_not_replace_the_first(register, event):
    # Ingestion keeps the first event of an id and skips the rest; simulate must agree.
    first = event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00")
    resent = type(first)(
        id=first.id,
        type="order.closed",
        subject="customer:42",
        occurred_at=at("2023-06-01T10:00:00+02:00"),
    )
    assert deadline(register, "customer:42", "sales", first, resent) == (
        "2025-02-28T10:00:00+01:00"
    )


# several rules for one activity: kept as long as any rule justifies it

SALES_RULE = """      - clock: [order.closed]
        ends_on: [erasure.requested]
        keep: 5 years
        then: anonymise
"""


def register_with_second_sales_rule(rule: str):
    # after the sales rule and its targets, the last lines of the register
    text = default_register_path().read_text(encoding="utf-8")
    assert SALES_RULE in text and text.endswith("gift_message: null\n")
    return parse_register(text + rule + "        source: test\n", "two-rules.yaml")


def test_with_two_rules_the_longer_one_decides(event):
    two = register_with_second_sales_rule(
        "      - clock: [invoice.issued]\n        keep: 10 years\n        then: delete\n"
    )
    events = [
        event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00"),
        event("invoice.issued", "customer:42", "2020-02-29T10:05:00+01:00"),
    ]
    lc = lifecycle(two, "customer:42", "sales", *events)
    assert iso(lc.deadline_at) == "2030-02-28T10:05:00+01:00"
    assert lc.then == "delete"


def test_with_two_rules_an_open_ended_one_outlasts_any_deadline(event):
    two = register_with_second_sales_rule(
        "      - opens_on: [newsletter.subscribed]\n        keep: 0 days\n        then: delete\n"
    )
    events = [
        event("order.closed", "customer:42", "2020-02-29T10:00:00+01:00"),
        event("newsletter.subscribed", "customer:42", "2019-01-07T08:00:00+01:00"),
    ]
    lc = lifecycle(two, "customer:42", "sales", *events)
    assert lc.deadline_at is None
    assert iso(lc.anchor_at) == "2019-01-07T08:00:00+01:00"


# Review findings: an end after the clock ran out, consent read where it is given,
# a keep per distributor over several orders.


def test_an_erasure_request_after_the_data_was_due_leaves_it_due_since_then(register, event):
    visit = event("visit.recorded", "visitor:late", "2020-01-15T10:00:00+01:00")
    request = event("erasure.requested", "visitor:late", "2026-05-01T10:00:00+02:00")
    lc = lifecycle(register, "visitor:late", "website.navigation", visit, request)
    # 13 months after the visit, not the day of the request: overdue for five years
    assert iso(lc.deadline_at) == "2021-02-15T10:00:00+01:00"
    assert iso(lc.anchor_at) == "2020-01-15T10:00:00+01:00"


def test_an_erasure_request_before_the_clock_runs_out_still_ends_at_the_request(register, event):
    visit = event("visit.recorded", "visitor:soon", "2026-01-15T10:00:00+01:00")
    request = event("erasure.requested", "visitor:soon", "2026-05-01T10:00:00+02:00")
    assert deadline(register, "visitor:soon", "website.navigation", visit, request) == (
        "2026-05-01T10:00:00+02:00"
    )


def test_a_keep_flag_on_the_application_is_no_consent(register, event):
    applied = event("candidate.applied", "candidate:d", "2025-01-10T10:00:00+01:00", keep=True)
    rejected = event("candidate.rejected", "candidate:d", "2025-02-10T10:00:00+01:00", keep=False)
    assert deadline(register, "candidate:d", "recruitment", applied, rejected) == (
        "2025-02-10T10:00:00+01:00"
    )


def test_a_later_rejection_without_the_flag_withdraws_the_consent_given_with_an_earlier(
    register, event
):
    first = event("candidate.rejected", "candidate:h", "2025-02-10T10:00:00+01:00", keep=True)
    again = event("candidate.rejected", "candidate:h", "2025-06-10T10:00:00+02:00")
    assert deadline(register, "candidate:h", "recruitment", first, again) == (
        "2025-06-10T10:00:00+02:00"
    )


def test_an_earlier_order_through_a_distributor_that_keeps_longer_outlasts_a_later_one(
    register, event
):
    sud = event(
        "order.closed",
        "distributor-customer:X1",
        "2022-01-10T10:00:00+01:00",
        distributor="DIST-SUD",
    )
    nord = event(
        "order.closed",
        "distributor-customer:X1",
        "2023-01-10T10:00:00+01:00",
        distributor="DIST-NORD",
    )
    lc = lifecycle(register, "distributor-customer:X1", "distributors.orders", sud, nord)
    assert iso(lc.deadline_at) == "2027-01-10T10:00:00+01:00"  # DIST-SUD: 5 years


def test_a_contact_after_a_rejection_without_consent_does_not_reopen_the_application(
    register, event
):
    applied = event("candidate.applied", "candidate:f", "2025-01-10T10:00:00+01:00")
    rejected = event("candidate.rejected", "candidate:f", "2025-02-10T10:00:00+01:00")
    feedback = event(
        "contact.made", "candidate:f", "2025-04-10T10:00:00+02:00", direction="inbound"
    )
    assert deadline(register, "candidate:f", "recruitment", applied, rejected, feedback) == (
        "2025-02-10T10:00:00+01:00"
    )


def test_a_clock_that_ran_out_in_the_autumns_repeated_hour_is_compared_by_instant(register, event):
    # Visits kept 13 months run out at 02:10 on 25 October 2026, a time that comes twice
    # that night; the calendar arithmetic takes the second (+01:00, 01:10 UTC). The
    # erasure request comes at the first 02:50 (+02:00, 00:50 UTC), before the clock ran
    # out: due at the request. Read as wall times, 02:10 looked earlier than 02:50 and
    # the data was kept until 02:10+01:00, twenty minutes after the request.
    visit = event("visit.recorded", "visitor:v-9", "2025-09-25T02:10:00+02:00")
    asked = event("erasure.requested", "visitor:v-9", "2026-10-25T02:50:00+02:00")
    assert deadline(register, "visitor:v-9", "website.navigation", visit, asked) == (
        "2026-10-25T02:50:00+02:00"
    )


# Contact direction (CNIL, référentiel « gestion commerciale »: only the "dernier contact
# émanant du prospect" renews; the shop's own calls and e-mails do not)


def test_a_prospect_the_shop_called_is_due_3_years_after_writing_to_the_shop(register, event):
    wrote = event("contact.made", "prospect:p-21", "2023-02-14T10:00:00+01:00", direction="inbound")
    called = event(
        "contact.made", "prospect:p-21", "2025-06-12T15:00:00+02:00", direction="outbound"
    )
    lc = lifecycle(register, "prospect:p-21", "website.prospects", wrote, called)
    assert iso(lc.anchor_at) == "2023-02-14T10:00:00+01:00"
    assert iso(lc.deadline_at) == "2026-02-14T10:00:00+01:00"
    assert lc.state(at("2026-03-01T00:00:00+01:00")) is State.due


@pytest.mark.parametrize("activity", ["crm.customers", "website.accounts"])
def test_a_customer_the_shop_e_mailed_is_due_5_years_after_the_last_order(
    register, event, activity
):
    order = event("order.closed", "customer:21", "2020-03-10T11:00:00+01:00")
    mailing = event(
        "contact.made", "customer:21", "2024-01-22T09:00:00+01:00", direction="outbound"
    )
    lc = lifecycle(register, "customer:21", activity, order, mailing)
    assert iso(lc.anchor_at) == "2020-03-10T11:00:00+01:00"
    assert iso(lc.deadline_at) == "2025-03-10T11:00:00+01:00"
    assert lc.state(at("2025-06-01T00:00:00+02:00")) is State.due


def test_a_customer_who_writes_back_renews_the_relationship(register, event):
    order = event("order.closed", "customer:22", "2020-03-10T11:00:00+01:00")
    reply = event("contact.made", "customer:22", "2024-01-22T09:00:00+01:00", direction="inbound")
    assert deadline(register, "customer:22", "crm.customers", order, reply) == (
        "2029-01-22T09:00:00+01:00"
    )


def test_an_ambassador_the_shop_calls_after_the_contract_is_not_kept_longer(register, event):
    ended = event("ambassador.contract_ended", "ambassador:a-21", "2021-05-31T18:00:00+02:00")
    call = event(
        "contact.made", "ambassador:a-21", "2023-09-01T10:00:00+02:00", direction="outbound"
    )
    assert deadline(register, "ambassador:a-21", "ambassadors", ended, call) == (
        "2026-05-31T18:00:00+02:00"
    )


def test_a_shop_call_keeps_a_candidate_as_the_seed_counts_every_contact(register, event):
    # recruitment: "le dernier contact avec le candidat", whichever way it went
    applied = event("candidate.applied", "candidate:c-21", "2024-01-10T10:00:00+01:00")
    called = event(
        "contact.made", "candidate:c-21", "2024-06-03T14:00:00+02:00", direction="outbound"
    )
    assert deadline(register, "candidate:c-21", "recruitment", applied, called) == (
        "2026-06-03T14:00:00+02:00"
    )


def test_a_prospect_only_the_shop_ever_contacted_is_kept_from_the_first_call(register, event):
    # the data was collected by the first call at the latest; later calls renew nothing
    first = event(
        "contact.made", "prospect:p-22", "2023-04-03T09:00:00+02:00", direction="outbound"
    )
    again = event(
        "contact.made", "prospect:p-22", "2025-04-03T09:00:00+02:00", direction="outbound"
    )
    lc = lifecycle(register, "prospect:p-22", "website.prospects", again, first)
    assert iso(lc.anchor_at) == "2023-04-03T09:00:00+02:00"
    assert iso(lc.deadline_at) == "2026-04-03T09:00:00+02:00"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        ({}, "contact.made needs data.direction: send inbound"),
        ({"direction": "jeanne@example.org"}, "is not one of inbound, outbound"),
        ({"direction": "INBOUND"}, "is not one of inbound, outbound"),
        ({"direction": True}, "is not one of inbound, outbound"),
    ],
)
def test_a_contact_without_its_direction_is_refused_and_never_guessed(register, data, reason):
    raw = {
        "id": "c-1",
        "type": "contact.made",
        "subject": "prospect:p-23",
        "occurred_at": "2025-06-12T15:00:00+02:00",
        "data": data,
    }
    with pytest.raises(EventRefused) as refused:
        parse_event(raw, register)
    assert reason in str(refused.value)
    assert "jeanne" not in str(refused.value) and "INBOUND" not in str(refused.value)
