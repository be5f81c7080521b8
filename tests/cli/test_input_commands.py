"""A DPO and the shop's developers type what people type; each command answers with an
error they can act on (the option they gave, the file and line, what to do), never a
traceback, and never echoes what looks like personal data.

Each test runs the installed `lethe` on a fresh embedded home (SQLite store, no server).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EMAIL = "jean.dupont@example.com"
LATIN1 = '{"id":"a","type":"order.closed","subject":"customer:1","occurred_at":"2026-01-01T00:00:00Z","data":{"city":"Orléans"}}\n'.encode(  # noqa: E501
    "latin-1"
)


def lethe_command() -> str:
    beside = Path(sys.executable).parent / "lethe"
    found = str(beside) if beside.exists() else shutil.which("lethe")
    assert found, "the lethe command is not installed next to this Python"
    return found


@pytest.fixture
def lethe(tmp_path: Path):
    def run(*args: str, **env: str) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_")}
        environment.update({"LETHE_HOME": str(tmp_path / "home"), **env})
        return subprocess.run(
            [lethe_command(), *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=environment,
            timeout=120,
        )

    return run


def assert_clean_failure(result: subprocess.CompletedProcess, code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr


# 6. The error names the option actually given


def test_forecast_with_a_bad_until_names_until(lethe) -> None:
    result = lethe("forecast", "--until", "garbage")
    assert_clean_failure(result, 2)
    assert "Invalid value for --until" in result.stderr
    assert "--now" not in result.stderr


def test_deadlines_with_a_bad_due_before_names_due_before(lethe) -> None:
    result = lethe("deadlines", "--due-before", "nope")
    assert_clean_failure(result, 2)
    assert "Invalid value for --due-before" in result.stderr
    assert "--now" not in result.stderr


def test_deadlines_with_a_bad_now_still_names_now(lethe) -> None:
    result = lethe("deadlines", "--due-before", "2026-01-01T00:00:00Z", "--now", "nope")
    assert_clean_failure(result, 2)
    assert "Invalid value for --now" in result.stderr


# 1 and 7. simulate: out-of-range dates and bad JSON are refused line by line


def test_simulate_refuses_out_of_range_dates_one_by_one_and_computes_the_rest(
    lethe, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        {"id": "a", "at": "9999-12-31T23:00:00+01:00"},
        {"id": "b", "at": "0001-01-01T00:30:00+01:00"},
        {"id": "c", "at": "2026-03-01T10:00:00+01:00"},
    ]
    events.write_text(
        "".join(
            json.dumps(
                {
                    "id": e["id"],
                    "type": "order.closed",
                    "subject": "customer:1",
                    "occurred_at": e["at"],
                }
            )
            + "\n"
            for e in lines
        ),
        encoding="utf-8",
    )
    result = lethe("simulate", str(events), "--now", "2026-04-01T00:00:00Z")
    assert_clean_failure(result, 3)
    assert f"{events}:1: refused: field occurred_at is out of range" in result.stderr
    assert f"{events}:2: refused: field occurred_at is out of range" in result.stderr
    rows = json.loads(result.stdout)
    assert rows and {r["anchor_at"] for r in rows} == {"2026-03-01T10:00:00+01:00"}


def test_simulate_reports_the_real_column_of_a_bad_json_line(lethe, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text('{"id": "a", "type": "order.closed",\n', encoding="utf-8")
    result = lethe("simulate", str(events))
    assert_clean_failure(result, 3)
    assert f"{events}:1: refused: not valid JSON:" in result.stderr
    assert "at column 36" in result.stderr


# 4. Files that are not UTF-8


def test_register_check_on_a_latin1_file_names_the_file_line_and_remedy(
    lethe, tmp_path: Path
) -> None:
    register = tmp_path / "register.yaml"
    register.write_bytes(b"name: x\n# r\xe9tention\n")
    result = lethe("register", "check", str(register))
    assert_clean_failure(result, 1)
    assert f"{register}:2: not UTF-8 text" in result.stderr
    assert "save the file as UTF-8" in result.stderr


def test_simulate_on_a_latin1_file_names_the_file_line_and_remedy(lethe, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n" + LATIN1)
    result = lethe("simulate", str(events))
    assert_clean_failure(result, 2)
    assert f"{events}:2: not UTF-8 text" in result.stderr
    assert "save the file as UTF-8" in result.stderr


def test_simulate_reads_a_utf8_file_with_a_byte_order_mark(lethe, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(LATIN1.decode("latin-1").encode("utf-8-sig"))
    result = lethe("simulate", str(events), "--now", "2026-04-01T00:00:00Z")
    assert result.returncode == 0, result.stderr


def test_simulate_on_a_missing_file_is_a_usage_error(lethe, tmp_path: Path) -> None:
    result = lethe("simulate", str(tmp_path / "nowhere.jsonl"))
    assert_clean_failure(result, 2)
    assert "does not exist" in result.stderr


def test_emit_file_on_a_latin1_file_names_the_file_line_and_remedy(lethe, tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    events.write_bytes(LATIN1)
    result = lethe("emit", "--file", str(events))
    assert_clean_failure(result, 2)
    assert f"{events}:1: not UTF-8 text" in result.stderr


# 5. emit with a broken LETHE_REGISTER


@pytest.fixture
def broken_register(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nactivities: [\n", encoding="utf-8")
    return path


def test_emit_with_a_broken_register_shows_its_file_and_line(lethe, broken_register: Path) -> None:
    result = lethe(
        "emit", "order.closed", "--subject", "customer:1", LETHE_REGISTER=str(broken_register)
    )
    assert_clean_failure(result, 1)
    assert f"{broken_register}:3: not valid YAML" in result.stderr


def test_emit_file_with_a_broken_register_shows_its_file_and_line(
    lethe, broken_register: Path, tmp_path: Path
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(LATIN1.decode("latin-1"), encoding="utf-8")
    result = lethe("emit", "--file", str(events), LETHE_REGISTER=str(broken_register))
    assert_clean_failure(result, 1)
    assert f"{broken_register}:3: not valid YAML" in result.stderr


# 3. hold place: a kind the register does not know, a subject with no lifecycle yet


def test_hold_on_an_unknown_kind_is_refused_with_the_known_kinds(lethe) -> None:
    result = lethe("hold", "place", "martian:1", "--reason", "case 1")
    assert_clean_failure(result, 1)
    assert "unknown subject kind (" in result.stderr
    assert "customer" in result.stderr and "candidate" in result.stderr
    listed = lethe("hold", "list", "--format", "json")
    assert json.loads(listed.stdout) == []


def test_hold_on_an_address_is_refused_without_echoing_it(lethe) -> None:
    result = lethe("hold", "place", EMAIL, "--reason", "case 1")
    assert_clean_failure(result, 1)
    assert "KIND:ID" in result.stderr
    assert EMAIL not in result.stderr


def test_hold_before_any_event_is_placed_with_a_warning(lethe) -> None:
    result = lethe("hold", "place", "customer:999", "--reason", "case 2")
    assert result.returncode == 0, result.stderr
    assert "warning: this subject has no lifecycle yet" in result.stderr
    listed = json.loads(lethe("hold", "list", "--format", "json").stdout)
    assert [h["subject"] for h in listed] == ["customer:999"]


@pytest.mark.parametrize(
    "reason",
    [
        f"asked by {EMAIL}",
        "called back on 06 12 34 56 78",
        "tel +33612345678",
        "tel +33 (0)6 12 34 56 78",
        "mobile:0612345678",
    ],
)
def test_a_hold_reason_with_contact_details_is_refused_without_echoing_them(
    lethe, reason: str
) -> None:
    result = lethe("hold", "place", "customer:999", "--reason", reason)
    assert_clean_failure(result, 1)
    assert "name the case instead" in result.stderr and reason not in result.stderr
    assert json.loads(lethe("hold", "list", "--format", "json").stdout) == []


@pytest.mark.parametrize(
    "reason",
    [
        "case LIT-2026-3 of 2026-11-26",
        "LIT-2026-100042",
        "case 2026-0042 (2026-03-01)",
        "court case 2026/14332",
        "Zendesk #48213 re order 2026-000123",
    ],
)
def test_a_hold_reason_with_dates_and_case_numbers_is_fine(lethe, reason: str) -> None:
    # case numbers are long runs of digits too: a phone number is 9 to 15 digits in one
    # run or in short groups
    result = lethe("hold", "place", "customer:999", "--reason", reason)
    assert result.returncode == 0, result.stderr
    assert [h["reason"] for h in json.loads(lethe("hold", "list", "--format", "json").stdout)] == [
        reason
    ]


SUBJECT = "customer:100042"


@pytest.mark.parametrize(
    "reason",
    [
        "customer:100042 disputes the invoice",
        "lawyer of Customer 100042",
        "client 100042 asked on 2026-11-26",
        "account #100042.",
    ],
)
def test_a_hold_reason_naming_the_subject_is_refused_without_echoing_it(lethe, reason: str) -> None:
    result = lethe("hold", "place", SUBJECT, "--reason", reason)
    assert_clean_failure(result, 1)
    assert "the reason names the subject itself" in result.stderr
    assert "name the case instead" in result.stderr and "100042" not in result.stderr
    assert json.loads(lethe("hold", "list", "--format", "json").stdout) == []
    # the id inside a case number is not the subject
    placed = lethe("hold", "place", SUBJECT, "--reason", "case LIT-100042")
    assert placed.returncode == 0, placed.stderr


def test_a_lift_reason_naming_the_subject_is_refused_and_the_hold_stays(lethe) -> None:
    assert lethe("hold", "place", SUBJECT, "--reason", "case LIT-2026-3").returncode == 0
    result = lethe("hold", "lift", SUBJECT, "--reason", f"{SUBJECT} settled")
    assert_clean_failure(result, 1)
    assert "the reason names the subject itself" in result.stderr
    assert SUBJECT not in result.stderr
    [held] = json.loads(lethe("hold", "list", "--format", "json").stdout)
    assert held["lifted_at"] is None


def test_hold_messages_and_errors_do_not_repeat_the_subject(lethe) -> None:
    placed = lethe("hold", "place", SUBJECT, "--reason", "case LIT-2026-3")
    lifted = lethe("hold", "lift", SUBJECT, "--reason", "case closed")
    again = lethe("hold", "lift", SUBJECT, "--reason", "case closed")
    assert placed.returncode == 0 and lifted.returncode == 0, placed.stderr + lifted.stderr
    assert "hold 1 placed" in placed.stderr and "1 hold(s) lifted" in lifted.stderr
    assert_clean_failure(again, 1)
    assert "this subject has no hold placed by hand" in again.stderr
    for result in (placed, lifted, again):
        assert "100042" not in result.stdout + result.stderr


def test_hold_list_shows_the_subject_and_the_keyed_hash_the_dashboard_shows(
    lethe, tmp_path: Path
) -> None:
    from worker.domain.hashing import subject_ref

    placed = lethe("hold", "place", SUBJECT, "--reason", "case 7")
    assert placed.returncode == 0, placed.stderr
    secret = (tmp_path / "home" / "secret").read_text().strip().encode()
    [row] = json.loads(lethe("hold", "list", "--format", "json").stdout)
    assert row["subject"] == SUBJECT
    assert row["subject_ref"] == subject_ref(secret, SUBJECT)
    shown = lethe("hold", "list").stdout
    assert shown.splitlines()[0].split()[:3] == ["id", "subject", "subject_ref"]
    assert row["subject_ref"] in shown


# 8. audit: a malformed subject, a subject or run with no rows


@pytest.mark.parametrize("command", [["audit"], ["hold", "list"]])
def test_a_subject_given_as_an_address_says_kind_id_without_echoing_it(
    lethe, command: list[str]
) -> None:
    result = lethe(*command, "--subject", EMAIL)
    assert_clean_failure(result, 2)
    assert "KIND:ID" in result.stderr and EMAIL not in result.stderr


@pytest.mark.parametrize(("fmt", "empty"), [("json", "[]\n"), ("csv", None)])
def test_audit_of_an_unknown_subject_says_so_and_keeps_the_format(
    lethe, fmt: str, empty: str | None
) -> None:
    result = lethe("audit", "--subject", "customer:424242", "--format", fmt)
    assert result.returncode == 0, result.stderr
    assert "no audit rows for this subject" in result.stderr
    if empty is not None:
        assert result.stdout == empty
    else:
        assert result.stdout.startswith("id,run_id,subject_ref")


def test_audit_of_an_unknown_run_says_so_and_keeps_the_format(lethe) -> None:
    result = lethe("audit", "--run", "9999", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert "no sweep run 9999" in result.stderr
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize(
    "command",
    [["status"], ["emit", "contact.made", "--direction", "inbound", "--subject", "c:1"]],
)
def test_a_home_that_cannot_hold_files_is_named_with_the_remedy(
    lethe, tmp_path: Path, command: list[str]
):
    not_a_folder = tmp_path / "home-file"
    not_a_folder.write_text("")
    result = lethe(*command, LETHE_HOME=str(not_a_folder))
    assert result.returncode == 1
    assert f"LETHE_HOME={not_a_folder} cannot hold Lethe's files" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_fresh_home_with_its_own_secret_is_made_by_the_first_command(lethe, tmp_path: Path):
    # With LETHE_SECRET set, no secret file is written, and that was what made the home
    home = tmp_path / "not" / "yet"
    result = lethe("deadlines", "--format", "json", LETHE_HOME=str(home), LETHE_SECRET="s" * 32)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert (home / "lethe.sqlite3").is_file() and not (home / "secret").exists()


def test_a_command_leaves_what_it_wrote_in_the_store_file_itself(lethe, tmp_path: Path):
    # The store's connection is closed at exit, which folds the WAL into the file: a copy of
    # lethe.sqlite3 alone (a backup, a move to another host) holds the hold just placed.
    home = tmp_path / "home"
    placed = lethe("hold", "place", "customer:100000042", "--reason", "case LIT-2026-3")
    assert placed.returncode == 0, placed.stderr
    assert not (home / "lethe.sqlite3-wal").exists(), "the store's WAL was left behind"
    copy = tmp_path / "copy.sqlite3"
    shutil.copyfile(home / "lethe.sqlite3", copy)
    with closing(sqlite3.connect(copy)) as db:
        assert db.execute("SELECT reason FROM holds").fetchall() == [("case LIT-2026-3",)]


def test_a_sqlite_store_url_with_options_is_found_by_status(lethe, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.sqlite3'}?timeout=30"
    assert lethe("db", "upgrade", LETHE_DATABASE_URL=url).returncode == 0
    status = lethe("status", LETHE_DATABASE_URL=url)
    database = next(line for line in status.stdout.splitlines() if "database" in line)
    assert "schema up to date" in database, status.stdout


def test_status_masks_a_database_password_whatever_it_holds(lethe) -> None:
    url = "postgresql+psycopg://lethe:Se/cr3t@x@127.0.0.1:1/store"
    result = lethe("status", LETHE_DATABASE_URL=url)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "lethe:***@127.0.0.1:1/store" in result.stdout
    assert "Se/cr3t" not in result.stdout + result.stderr and "cr3t" not in result.stdout


@pytest.mark.parametrize(
    "scheme, shown",
    [("redis", "redis://127.0.0.1:"), ("amqp", "amqp://guest:***@127.0.0.1:")],
    ids=["redis", "rabbitmq"],
)
def test_emit_to_a_broker_that_accepts_but_never_answers_fails_instead_of_hanging(
    lethe, scheme: str, shown: str
) -> None:
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[object] = []  # accepted and never answered: a stuck server, a half-open link
    threading.Thread(
        target=lambda: [held.append(server.accept()) for _ in range(8)], daemon=True
    ).start()
    try:
        result = lethe(
            "emit",
            "contact.made",
            "--direction",
            "outbound",
            "--subject",
            "customer:1",
            LETHE_BROKER_URL={
                "redis": f"redis://127.0.0.1:{server.getsockname()[1]}/0",
                "amqp": f"amqp://guest:guest@127.0.0.1:{server.getsockname()[1]}//",
            }[scheme],
            LETHE_SECRET="a-secret-of-some-length",
        )
    finally:
        server.close()
    assert_clean_failure(result, 1)
    assert f"cannot reach the broker at {shown}" in result.stderr


def test_a_bad_broker_setting_is_refused_in_one_line_naming_it(lethe) -> None:
    # read when a command first reaches the queue, after the other settings
    result = lethe("emit", "order.closed", "--subject", "customer:1", LETHE_PREFETCH="abc")
    assert_clean_failure(result, 1)
    assert "LETHE_PREFETCH='abc' is not a whole number" in result.stderr


# Contact direction: contact.made says which way it went, or is refused before it is sent


def test_emit_contact_without_a_direction_is_refused_with_the_remedy(lethe) -> None:
    result = lethe("emit", "contact.made", "--subject", "prospect:p-1")
    assert_clean_failure(result, 1)
    assert "event refused: contact.made needs data.direction: send inbound" in result.stderr
    assert "sent" not in result.stderr


def test_emit_direction_takes_only_inbound_or_outbound(lethe) -> None:
    result = lethe("emit", "contact.made", "--direction", "both", "--subject", "prospect:p-1")
    assert_clean_failure(result, 2)
    assert "Invalid value for '--direction'" in result.stderr
    assert "'inbound', 'outbound'" in result.stderr
    clash = lethe(
        "emit",
        "contact.made",
        "--direction",
        "inbound",
        "--data",
        "direction=outbound",
        "--subject",
        "prospect:p-1",
    )
    assert_clean_failure(clash, 2)
    assert "--direction and --data direction=... disagree" in clash.stderr


def test_emit_file_refuses_a_contact_without_a_direction_by_its_line(lethe, tmp_path) -> None:
    events = tmp_path / "events.jsonl"
    lines = [
        {"id": "c1", "type": "contact.made", "data": {"direction": "outbound"}},
        {"id": "c2", "type": "contact.made", "data": {"channel": "phone"}},
    ]
    events.write_text(
        "".join(
            json.dumps({**e, "subject": "customer:1", "occurred_at": "2025-06-12T15:00:00+02:00"})
            + "\n"
            for e in lines
        )
    )
    result = lethe("emit", "--file", str(events))
    assert_clean_failure(result, 3)
    assert f"{events}:2: refused: contact.made needs data.direction" in result.stderr
    assert "sent 1, refused 1" in result.stderr
