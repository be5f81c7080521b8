"""After `lethe demo`, what the shop holds of the people it erased is anonymous: no value
anyone holding LETHE_SECRET can derive from them, names the shop's own validation
accepts, a k-anonymity report, and proofs and the suppression list that still answer
for rows written by the release before the per-purpose keys."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import sqlite3
from pathlib import Path

import pytest
from harness import Lethe, base_env

from worker.demo.data import generate
from worker.domain.hashing import (
    PSEUDONYMS,
    legacy_subject_ref,
    legacy_value_hash,
    purpose_key,
    subject_ref,
    value_hash,
)
from worker.domain.register_file import default_register_path, load_register

PEOPLE = 150
# PrestaShop's Validate::isCustomerName, as the shipped register gives it
CUSTOMER_NAME = re.compile('^[^0-9!<>,;?=+()@#"°{}_$%:]*$')
NAME_COLUMNS = {
    "customers": ["first_name", "last_name"],
    "prospects": ["name"],
    "ambassadors": ["display_name"],
    "orders": ["ship_name"],
    "distributor_orders": ["customer_name"],
}


# Every test reads the one demo the module runs: one xdist process runs them all, so the
# demo runs once (run-tests: --dist loadgroup) instead of once per process.
pytestmark = pytest.mark.xdist_group("demo_anonymous")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Lethe:
    home = tmp_path_factory.mktemp("anonymous-demo")
    lethe = Lethe(home, base_env(home))
    lethe.run("demo", "--people", str(PEOPLE), timeout=600)
    # the commands after the demo read its own home and shop, as its last lines say
    demo_home = Path(lethe.env["LETHE_HOME"]) / "demo"
    lethe.env.update(
        LETHE_HOME=str(demo_home),
        LETHE_SHOP_DATABASE_URL=f"sqlite:///{demo_home / 'shop.sqlite3'}",
    )
    return lethe


def _home(demo: Lethe) -> Path:
    return Path(demo.env["LETHE_HOME"])


def _shop_cells(demo: Lethe) -> dict[str, list[dict]]:
    with sqlite3.connect(_home(demo) / "shop.sqlite3") as shop:
        shop.row_factory = sqlite3.Row
        tables = [r[0] for r in shop.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return {t: [dict(r) for r in shop.execute(f'SELECT * FROM "{t}"')] for t in tables}


def _erased_subjects(demo: Lethe) -> set[str]:
    with sqlite3.connect(_home(demo) / "lethe.sqlite3") as store:
        rows = store.execute("SELECT DISTINCT subject FROM lifecycles WHERE state = 'erased'")
        return {subject for (subject,) in rows}


def _derived(secret: bytes, subject: str, values: list[str]) -> set[str]:
    """Every keyed hash and pseudonym of this person that this or the previous release
    could have written: with the secret itself and with the pseudonyms' key, of each
    value alone and with the subject (a UNIQUE column's form)."""
    found = set()
    for key in (secret, purpose_key(secret, PSEUDONYMS)):
        messages = [f"pseudonym:{subject}"]
        for value in values:
            messages += [value, f"{len(subject)}:{subject}{value}"]
        for message in messages:
            found.add(hmac.new(key, message.encode(), hashlib.sha256).hexdigest())
    return found


def test_no_erased_row_holds_a_value_derived_from_the_person(demo: Lethe):
    secret = (_home(demo) / "secret").read_bytes().strip()
    register = load_register(default_register_path())
    # as `lethe demo` draws it, legacy customers (who predate Lethe) included
    original = generate(people=PEOPLE, seed=7, legacy=max(2, PEOPLE // 40)).rows
    erased = _erased_subjects(demo)
    assert len(erased) > 50
    candidates: set[str] = set()
    for activity in register.activities:
        for rule in activity.retention:
            for target in rule.targets:
                for row in original.get(target.table, []):
                    kinds = target.kinds or activity.subjects
                    for kind in kinds:
                        key = str(row[target.key])
                        subject = key if target.key_value == "subject" else f"{kind}:{key}"
                        if subject in erased:
                            values = [str(v) for v in row.values() if v is not None]
                            candidates |= _derived(secret, subject, values)
    assert candidates
    prefixes = {c[:8] for c in candidates}  # the shortest pseudonym written: 8 hex digits
    cells = [
        str(v) for rows in _shop_cells(demo).values() for row in rows for v in row.values() if v
    ]
    derived = [c for c in cells for p in re.findall(r"[0-9a-f]{8,}", c) if p[:8] in prefixes]
    assert derived == []
    # nor any hash or pseudonym of some other input
    assert not [c for c in cells if re.fullmatch(r"h:[0-9a-f]+|anon-[0-9a-f]+", c)]


def test_names_written_by_the_sweep_pass_the_shops_own_name_rule(demo: Lethe):
    # as `lethe demo` draws it, legacy customers (who predate Lethe) included
    original = generate(people=PEOPLE, seed=7, legacy=max(2, PEOPLE // 40)).rows
    shop = _shop_cells(demo)
    written = []
    for table, columns in NAME_COLUMNS.items():
        before = {row["id"]: row for row in original[table]}
        for row in shop[table]:
            for column in columns:
                if row[column] != before[row["id"]][column]:
                    written.append(row[column])
    assert len(written) > 20
    assert set(written) == {"Anonymous"}
    assert all(CUSTOMER_NAME.match(name) for name in written)


def test_lethe_anonymity_reports_the_k_of_every_anonymised_table(demo: Lethe):
    found = json.loads(demo.run("anonymity", "--k", "2", "--format", "json").stdout)
    tables = {r["table"]: r for r in found}
    assert set(tables) == {
        "prospects",
        "accounts",
        "customers",
        "ambassadors",
        "distributor_orders",
        "orders",
    }
    customers = tables["customers"]
    assert customers["activity"] == "crm.customers"
    assert customers["rows"] > 0 and customers["k_min"] >= 1
    assert 0 <= customers["below_k"] <= customers["rows"]
    # the rows counted are the customers the shop holds anonymised
    anonymous = [r for r in _shop_cells(demo)["customers"] if r["first_name"] == "Anonymous"]
    assert customers["rows"] == len(anonymous)
    # grouped by what the strategies kept: birth year and département
    groups: dict[tuple, int] = {}
    for r in anonymous:
        groups[(r["birth_date"], r["postcode"])] = (
            groups.get((r["birth_date"], r["postcode"]), 0) + 1
        )
    assert customers["k_min"] == min(groups.values())
    assert customers["below_k"] == sum(n for n in groups.values() if n < 2)
    table = demo.run("anonymity").stdout
    assert "k_min" in table and "below_k" in table and "generalise more" in table


def test_the_audit_records_rows_that_stay_pseudonymous_until_invoices_go(demo: Lethe):
    rows = json.loads(demo.run("audit", "--format", "json").stdout)
    linked = {
        r["activity"] for r in rows if "pseudonymous until crm.invoices ends" in r["strategy"]
    }
    assert {"crm.customers", "website.accounts", "sales"} <= linked
    assert not any(
        "pseudonymous" in r["strategy"] for r in rows if r["activity"] == "website.prospects"
    )


def test_proofs_and_the_suppression_list_answer_for_rows_of_the_previous_release(demo: Lethe):
    secret = (_home(demo) / "secret").read_bytes().strip()
    data = generate(people=PEOPLE, seed=7)
    asked = next(p for p in data.featured if p.role.startswith("asked for erasure")).subject
    left = next(p for p in data.featured if p.role == "left the newsletter").subject
    before = json.loads(demo.run("audit", "--subject", asked, "--proof").stdout)
    assert before["erased_activities"]
    # The previous release wrote its audit rows and suppression entries with the secret
    # itself: turn this person's into that form, as an upgraded store holds them.
    with sqlite3.connect(_home(demo) / "lethe.sqlite3") as store:
        changed = store.execute(
            "UPDATE erasures SET subject_ref = ? WHERE subject_ref = ?",
            (legacy_subject_ref(secret, asked), subject_ref(secret, asked)),
        ).rowcount
        assert changed == before["audit_rows"]
        email = data.emails[left]
        changed = store.execute(
            "UPDATE suppression SET value_hash = ? WHERE value_hash = ?",
            (legacy_value_hash(secret, email), value_hash(secret, email)),
        ).rowcount
        assert changed == 1
    after = json.loads(demo.run("audit", "--subject", asked, "--proof").stdout)
    assert after["erased_activities"] == before["erased_activities"]
    assert after["audit_rows"] == before["audit_rows"]
    assert after["subject_ref"] == before["subject_ref"]  # the current reference, shown
    code = f"from worker.client import is_suppressed; print(is_suppressed({email!r}))"
    assert demo.python(code).stdout.strip() == "True"
    other = "from worker.client import is_suppressed; print(is_suppressed('nobody@example.org'))"
    assert demo.python(other).stdout.strip() == "False"
