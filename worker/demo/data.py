"""Demo data: a shop's people, their rows and the events their lives send, from one seed.

Pure: the same seed gives the same shop and the same events. `lethe demo`,
the integration tests and the sweep benchmark use it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

START = datetime(2014, 1, 1, tzinfo=UTC)
END = datetime(2026, 11, 26, tzinfo=UTC)

_FIRST = ["Jeanne", "Louis", "Camille", "Hugo", "Léa", "Jules", "Manon", "Arthur", "Chloé", "Paul"]
_LAST = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand", "Leroy"]
_CITIES = [
    ("75008", "Paris"),
    ("69003", "Lyon"),
    ("13001", "Marseille"),
    ("20090", "Ajaccio"),
    ("33000", "Bordeaux"),
    ("97110", "Pointe-à-Pitre"),
    ("59000", "Lille"),
]


# The featured customer the shop called after their last order (`lethe demo` tells it).
OUTBOUND_STORY = "called by the shop"


@dataclass
class Person:
    """Someone the demo follows by name: which subject, and which row shows their story."""

    role: str
    subject: str
    table: str
    key: str
    key_value: Any


@dataclass
class DemoData:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    events: list[dict[str, Any]] = field(default_factory=list)
    featured: list[Person] = field(default_factory=list)
    emails: dict[str, str] = field(default_factory=dict)  # subject -> address in the shop
    # customers whose rows predate Lethe: no event ever named them (`lethe backfill`)
    legacy: list[str] = field(default_factory=list)


class _Maker:
    def __init__(self, seed: int, start: datetime, end: datetime):
        self.rng = random.Random(seed)
        self.start, self.end = start, end
        self.data = DemoData()
        self.counter = 0

    def when(self, after: datetime | None = None, before: datetime | None = None) -> datetime:
        low = after or self.start
        high = before or self.end
        seconds = max(1, int((high - low).total_seconds()))
        moment = low + timedelta(seconds=self.rng.randrange(seconds))
        return moment.replace(microsecond=0)

    def event(self, type_: str, subject: str, at: datetime, **data: Any) -> None:
        self.counter += 1
        self.data.events.append(
            {
                "id": f"demo-{self.counter:07d}",
                "type": type_,
                "subject": subject,
                "occurred_at": at.isoformat(),
                "data": data,
            }
        )

    def name(self) -> tuple[str, str]:
        return self.rng.choice(_FIRST), self.rng.choice(_LAST)

    def place(self) -> tuple[str, str]:
        return self.rng.choice(_CITIES)

    def phone(self) -> str:
        return "+33 6 " + " ".join(f"{self.rng.randrange(100):02d}" for _ in range(4))

    def money(self, low: int, high: int) -> Decimal:
        return Decimal(self.rng.randrange(low * 100, high * 100)) / 100


def generate(
    people: int = 400,
    seed: int = 7,
    start: datetime = START,
    end: datetime = END,
    legacy: int = 0,
) -> DemoData:
    """A shop of about `people` people, with their events from `start` to `end`, and
    `legacy` more customers whose rows predate Lethe (no events)."""
    m = _Maker(seed, start, end)
    shares = {
        "customer": 0.40,
        "prospect": 0.08,
        "visitor": 0.25,
        "candidate": 0.08,
        "ambassador": 0.04,
        "distributor-customer": 0.15,
    }
    counts = {kind: max(2, round(people * share)) for kind, share in shares.items()}
    for i in range(1, counts["customer"] + 1):
        _customer(m, i)
    for i in range(1, counts["prospect"] + 1):
        _prospect(m, i)
    for i in range(1, counts["visitor"] + 1):
        subject = f"visitor:v-{1000 + i}"
        for _ in range(m.rng.randint(1, 3)):
            _visit(m, subject)
        if m.rng.random() < 0.4:
            _newsletter(m, subject, m.name()[0])
    for i in range(1, counts["candidate"] + 1):
        _candidate(m, i)
    for i in range(1, counts["ambassador"] + 1):
        _ambassador(m, i)
    for i in range(1, counts["distributor-customer"] + 1):
        _distributor_customer(m, i)
    _stories(m)
    m.data.events.sort(key=lambda e: (e["occurred_at"], e["id"]))
    _legacy(m, seed, legacy, counts["customer"])
    return m.data


def _legacy(m: _Maker, seed: int, count: int, after: int) -> None:
    """Customers of 2014-2017 whose rows are in the shop but whose events were never sent:
    a shop's years before Lethe. Made last, with a generator of their own, so the rest of
    the shop is the same with or without them."""
    old = _Maker(seed + 1, START, datetime(2017, 6, 1, tzinfo=UTC))
    old.data.rows, old.data.emails = m.data.rows, m.data.emails  # their events are dropped
    for i in range(after + 1, after + count + 1):
        _customer(old, i)
        m.data.legacy.append(f"customer:{i}")


def _customer(m: _Maker, i: int) -> None:
    subject = f"customer:{i}"
    first, last = m.name()
    postcode, city = m.place()
    email = f"{first}.{last}.{i}@example.org".lower()
    created = m.when(before=m.end - timedelta(days=60))
    m.data.emails[subject] = email
    m.data.rows["customers"].append(
        {
            "id": i,
            "email": email,
            "first_name": first,
            "last_name": last,
            "phone": m.phone(),
            "birth_date": date(
                m.rng.randint(1950, 2004), m.rng.randint(1, 12), m.rng.randint(1, 28)
            ),
            "street": f"{m.rng.randint(1, 120)} rue de la Paix",
            "postcode": postcode,
            "city": city,
            "created_at": created.replace(tzinfo=None),
        }
    )
    if m.rng.random() < 0.7:
        m.data.rows["accounts"].append(
            {
                "customer_id": i,
                "login": email,
                "password_hash": "argon2$" + f"{m.rng.getrandbits(64):016x}",
                "last_login_at": created.replace(tzinfo=None),
                "last_ip": f"192.0.2.{m.rng.randint(1, 254)}",
            }
        )
        if m.rng.random() < 0.2:
            m.event("account.closed", subject, m.when(after=created))
    moment = created
    for _ in range(m.rng.randint(1, 3)):
        moment = m.when(after=moment, before=min(m.end, moment + timedelta(days=900)))
        _order(m, i, subject, first, last, postcode, city, email, moment)
    if m.rng.random() < 0.3:
        # one in three the shop's own call, which keeps nobody (CNIL: only the person's
        # own contact renews); by the id, so the demo's random draws stay the same
        direction = "outbound" if i % 3 == 0 else "inbound"
        m.event(
            "contact.made", subject, m.when(after=created), channel="phone", direction=direction
        )
    if m.rng.random() < 0.3:
        _visit(m, subject, after=created)
    if m.rng.random() < 0.3:
        _newsletter(m, subject, first, email=email, after=created)


def _order(m, i, subject, first, last, postcode, city, email, closed_at) -> None:
    n = len(m.data.rows["orders"]) + 1
    total = m.money(15, 400)
    m.data.rows["orders"].append(
        {
            "id": n,
            "customer_id": i,
            "number": f"A-{n:06d}",
            "placed_at": (closed_at - timedelta(days=4)).replace(tzinfo=None),
            "ship_name": f"{first} {last}",
            "ship_street": f"{m.rng.randint(1, 120)} avenue Foch",
            "ship_postcode": postcode,
            "ship_city": city,
            "total": total,
            "gift_message": "Joyeux anniversaire !" if m.rng.random() < 0.2 else None,
        }
    )
    _invoice(m, subject, f"{first} {last}", postcode, city, email, closed_at, total, customer_id=i)
    m.event("order.closed", subject, closed_at, order=f"A-{n:06d}")


def _invoice(m, subject, name, postcode, city, email, at, total, **owner) -> None:
    n = len(m.data.rows["invoices"]) + 1
    excl = (total / Decimal("1.2")).quantize(Decimal("0.01"))
    m.data.rows["invoices"].append(
        {
            "id": n,
            "number": f"F-{n:06d}",
            "customer_id": owner.get("customer_id"),
            "ambassador_ref": owner.get("ambassador_ref"),
            "issued_at": at.date(),
            "billing_name": name,
            "billing_street": f"{m.rng.randint(1, 120)} boulevard Haussmann",
            "billing_postcode": postcode,
            "billing_city": city,
            "customer_email": email,
            "customer_phone": m.phone(),
            "amount_excl_tax": excl,
            "vat": total - excl,
            "amount_incl_tax": total,
        }
    )
    m.event("invoice.issued", subject, at, invoice=f"F-{n:06d}")


def _prospect(m: _Maker, i: int) -> None:
    ref = f"p-{2000 + i}"
    first, last = m.name()
    postcode, _ = m.place()
    at = m.when()
    m.data.rows["prospects"].append(
        {
            "id": i,
            "ref": ref,
            "name": f"{first} {last}",
            "email": f"{first}.{ref}@example.net".lower(),
            "phone": m.phone(),
            "company": f"{last} SARL",
            "postcode": postcode,
            "message": "Pouvez-vous m'envoyer votre catalogue ?",
            "contacted_at": at.replace(tzinfo=None),
        }
    )
    m.event("contact.made", f"prospect:{ref}", at, channel="form", direction="inbound")


def _visit(m: _Maker, subject: str, after: datetime | None = None) -> None:
    n = len(m.data.rows["navigation_logs"]) + 1
    at = m.when(after=after)
    m.data.rows["navigation_logs"].append(
        {
            "id": n,
            "subject": subject,
            "visited_at": at.replace(tzinfo=None),
            "ip": f"198.51.100.{m.rng.randint(1, 254)}",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "path": m.rng.choice(["/", "/catalogue", "/panier", "/blog/ete"]),
        }
    )
    m.event("visit.recorded", subject, at, page="/catalogue")


def _newsletter(
    m: _Maker, subject: str, first: str, email: str | None = None, after: datetime | None = None
) -> None:
    n = len(m.data.rows["newsletter_subscribers"]) + 1
    email = email or f"{first}.{n}@example.com".lower()
    at = m.when(after=after)
    m.data.emails.setdefault(subject, email)
    m.data.rows["newsletter_subscribers"].append(
        {
            "id": n,
            "subject": subject,
            "email": email,
            "first_name": first,
            "subscribed_at": at.replace(tzinfo=None),
        }
    )
    m.event("newsletter.subscribed", subject, at)
    if m.rng.random() < 0.5:
        m.event("newsletter.unsubscribed", subject, m.when(after=at))


def _candidate(m: _Maker, i: int) -> None:
    ref = f"c-{i}"
    subject = f"candidate:{ref}"
    first, last = m.name()
    at = m.when()
    m.data.rows["candidates"].append(
        {
            "id": i,
            "ref": ref,
            "first_name": first,
            "last_name": last,
            "email": f"{first}.{last}.{ref}@example.com".lower(),
            "phone": m.phone(),
            "city": m.place()[1],
            "cv": "Dix ans d'expérience en logistique.",
            "applied_at": at.replace(tzinfo=None),
        }
    )
    m.event("candidate.applied", subject, at)
    if m.rng.random() < 0.7:
        m.event("candidate.rejected", subject, m.when(after=at), keep=m.rng.random() < 0.3)


def _ambassador(m: _Maker, i: int) -> None:
    ref = f"a-{i}"
    subject = f"ambassador:{ref}"
    first, last = m.name()
    postcode, city = m.place()
    email = f"{first}.{ref}@example.org".lower()
    ended = m.when()
    m.data.rows["ambassadors"].append(
        {
            "id": i,
            "ref": ref,
            "display_name": f"@{first.lower()}{i}",
            "email": email,
            "instagram": f"{first.lower()}_{ref}",
            "iban": f"FR76{m.rng.getrandbits(60):018d}"[:27],
            "street": "3 place Bellecour",
            "postcode": postcode,
            "city": city,
            "fee": m.money(100, 3000),
            "contract_ended_at": ended.date(),
        }
    )
    _invoice(
        m,
        subject,
        f"{first} {last}",
        postcode,
        city,
        email,
        ended,
        m.money(100, 900),
        ambassador_ref=ref,
    )
    m.event("ambassador.contract_ended", subject, ended)


def _distributor_customer(m: _Maker, i: int) -> None:
    distributor = m.rng.choice(["DIST-NORD", "DIST-SUD", "DIST-EST"])
    ref = f"{distributor[5]}N-{500 + i}"
    first, last = m.name()
    postcode, city = m.place()
    at = m.when()
    n = len(m.data.rows["distributor_orders"]) + 1
    m.data.rows["distributor_orders"].append(
        {
            "id": n,
            "customer_ref": ref,
            "distributor": distributor,
            "number": f"D-{n:06d}",
            "placed_at": at.replace(tzinfo=None),
            "customer_name": f"{first} {last}",
            "phone": m.phone(),
            "street": "8 quai des Chartrons",
            "postcode": postcode,
            "city": city,
            "total": m.money(20, 500),
        }
    )
    m.event("order.closed", f"distributor-customer:{ref}", at, distributor=distributor)


def _stories(m: _Maker) -> None:
    """The people the demo follows: one erased on time, one held by a dispute, one the
    shop called long after their last order, one who asked for erasure, one who left the
    newsletter."""
    last = _last_events(m)
    customers = [c["id"] for c in m.data.rows["customers"]]
    old = [i for i in customers if last[f"customer:{i}"] < datetime(2019, 1, 1, tzinfo=UTC)]
    recent = [
        i
        for i in customers
        if datetime(2022, 6, 1, tzinfo=UTC)
        < last[f"customer:{i}"]
        < datetime(2025, 6, 1, tzinfo=UTC)
    ]
    if len(old) >= 2:
        m.data.featured.append(
            Person("erased after 5 years", f"customer:{old[0]}", "customers", "id", old[0])
        )
        subject = f"customer:{old[1]}"
        m.event("dispute.opened", subject, datetime(2020, 6, 1, 10, tzinfo=UTC), case="LIT-2020-14")
        m.data.featured.append(Person("held by a dispute", subject, "customers", "id", old[1]))
    lapsed = [
        i
        for i in customers
        if i not in old[:2] and last[f"customer:{i}"] < datetime(2020, 6, 1, tzinfo=UTC)
    ]
    if lapsed:
        # the shop calls four years after the last order, a year before the 5 years run
        # out: the call renews nothing, the file goes 5 years after the last order
        subject = f"customer:{lapsed[0]}"
        called = min(last[subject] + timedelta(days=4 * 365), m.end - timedelta(days=1))
        m.event("contact.made", subject, called, channel="phone", direction="outbound")
        m.data.featured.append(Person(OUTBOUND_STORY, subject, "customers", "id", lapsed[0]))
    if recent:
        subject = f"customer:{recent[0]}"
        m.event("erasure.requested", subject, last[subject] + timedelta(days=30))
        m.data.featured.append(
            Person("asked for erasure (art. 17)", subject, "customers", "id", recent[0])
        )
    leavers = [e for e in m.data.events if e["type"] == "newsletter.unsubscribed"]
    if leavers:
        # the latest: an address on the suppression list is kept three years
        # (LETHE_SUPPRESSION_DAYS), and the demo's years go further back
        leaver = max(leavers, key=lambda e: datetime.fromisoformat(e["occurred_at"]))["subject"]
        m.data.featured.append(
            Person("left the newsletter", leaver, "newsletter_subscribers", "subject", leaver)
        )


def _last_events(m: _Maker) -> dict[str, datetime]:
    last: dict[str, datetime] = {}
    for e in m.data.events:
        moment = datetime.fromisoformat(e["occurred_at"])
        if e["subject"] not in last or moment > last[e["subject"]]:
            last[e["subject"]] = moment
    return last
