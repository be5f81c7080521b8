"""The helpers every command shares to read the user's input: option names in errors,
subjects checked without echoing them, UTF-8 files read line by line, and a note when
an audit question has no answer."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

from worker.cli.common import (
    empty_audit_note,
    now_option,
    subject_or_exit,
    text_lines,
)
from worker.store.migrate import upgrade
from worker.store.schema import PurgeRun
from worker.store.sessions import now_utc, transaction

EMAIL = "jean.dupont@example.com"


def test_now_option_names_the_option_it_was_given_for() -> None:
    with pytest.raises(click.BadParameter) as caught:
        now_option("garbage", "--until")
    assert caught.value.param_hint == "--until"
    assert "field --until is not" in caught.value.message


def test_subject_or_exit_refuses_an_address_without_echoing_it() -> None:
    with pytest.raises(click.BadParameter) as caught:
        subject_or_exit(EMAIL)
    assert "must be KIND:ID" in caught.value.message
    assert EMAIL not in caught.value.message
    assert subject_or_exit("customer:42") == "customer:42"
    assert subject_or_exit(None) is None


def test_text_lines_names_the_line_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"{}\n{}\n" + "Orléans\n".encode("latin-1"))
    lines = text_lines(str(path), "'--file'")
    assert [n for n, _ in (next(lines), next(lines))] == [1, 2]
    with pytest.raises(click.BadParameter) as caught:
        next(lines)
    assert caught.value.message.startswith(f"{path}:3: not UTF-8 text (byte 0xe9")
    assert "save the file as UTF-8" in caught.value.message


def test_text_lines_drops_a_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes("{}\r\n{}\n".encode("utf-8-sig"))
    assert [line for _, line in text_lines(str(path), "'--file'")] == ["{}\r\n", "{}\n"]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'lethe.sqlite3'}"
    upgrade(url)
    with transaction(url) as session:
        now = now_utc()
        session.add(PurgeRun(id=7, schedule="manual", now_at=now, started_at=now, status="done"))
    return url


@pytest.mark.parametrize(
    ("subject", "run_id", "said"),
    [
        (None, 9999, "no sweep run 9999"),
        ("customer:1", 9999, "no sweep run 9999"),
        (None, 7, "sweep run 7 erased nothing"),
        ("customer:1", 7, "no audit rows for this subject in sweep run 7"),
        ("customer:1", None, "no audit rows for this subject"),
        (None, None, None),
    ],
)
def test_an_empty_audit_says_why(
    store: str, subject: str | None, run_id: int | None, said: str | None
) -> None:
    assert empty_audit_note(store, subject, run_id) == said
