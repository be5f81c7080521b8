"""The log pipeline keeps personal data out, whoever writes the line (Lethe, Celery, uvicorn)."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from worker.domain.hashing import subject_ref
from worker.logs import configure_logging, keep_personal_data_out, log, mask_personal_values

SECRET = b"unit-test-secret-0123456789"


@pytest.fixture(autouse=True)
def _restore_logging():
    # configure_logging binds handlers to this test's captured stderr: undo it after.
    handlers = logging.getLogger().handlers[:]
    yield
    logging.getLogger().handlers = handlers
    structlog.reset_defaults()


@pytest.mark.parametrize(
    "text",
    [
        "call jeanne.martin@example.org now",
        "phone +33 6 12 34 56 78",
        "phone 06.12.34.56.78",
        "phone 0612345678",
        "phone (555) 123-4567",
        "phone:0612345678",
        "{'tel':'+33612345678'}",
        "IntegrityError [parameters: {'email': 'x', 'name': 'Jeanne Martin'}]",
    ],
)
def test_addresses_phones_and_sql_parameters_are_masked(text: str):
    masked = mask_personal_values(text)
    for needle in ("jeanne.martin@", "12 34 56", "12.34.56", "0612345678", "123-4567", "Jeanne"):
        assert needle not in masked


@pytest.mark.parametrize(
    "text",
    [
        "Task lethe.ingest[b6a65dd8-c8fe-4eaa-9f97-d334b631f139] succeeded in 0.12719657299999199s",
        "run 12 done at 2026-11-26T03:00:00+01:00, 1500 erased",
        "sweep took 12.5 s for 123456 lifecycles",
    ],
)
def test_ordinary_messages_are_left_alone(text: str):
    assert mask_personal_values(text) == text


def test_subjects_become_keyed_hashes_and_payloads_are_dropped():
    configure_logging(SECRET, fmt="json")
    cleaned = keep_personal_data_out(
        None,
        "info",
        {"event": "x", "subject": "customer:42", "data": {"email": "a@b.fr"}, "subjects": ["a"]},
    )
    assert cleaned == {
        "event": "x",
        "subject": subject_ref(SECRET, "customer:42"),
        "data": "[removed]",
        "subjects": 1,
    }


def test_standard_library_records_come_out_as_one_json_line_each(capsys):
    configure_logging(SECRET, fmt="json")
    logging.getLogger("celery.app.trace").error(
        "Task lethe.ingest[%s] raised: %s",
        "b6a65dd8-c8fe-4eaa-9f97-d334b631f139",
        "ValueError('bad address jeanne@example.org')",
    )
    log.info("events ingested", subject="customer:7", stored=3)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    first, second = (json.loads(line) for line in lines[-2:])
    assert first["logger"] == "celery.app.trace" and first["level"] == "error"
    assert first["task_id"] == "b6a65dd8-c8fe-4eaa-9f97-d334b631f139"
    assert "jeanne@example.org" not in first["event"]
    assert second["subject"] == subject_ref(SECRET, "customer:7") and second["stored"] == 3


def test_published_tasks_show_shapes_not_events_to_flower():
    from worker.app import app

    sent = {}

    def capture(headers=None, **_):
        sent.update(headers)

    from celery.signals import before_task_publish

    before_task_publish.connect(capture, weak=False)
    try:
        with app.connection_for_write("memory://") as connection:
            app.send_task(
                "lethe.ingest",
                args=[[{"subject": "customer:1", "data": {"email": "jeanne@example.org"}}]],
                kwargs={"schedule": "nightly", "run_id": 3},
                connection=connection,
            )
    finally:
        before_task_publish.disconnect(capture)
    assert sent["argsrepr"] == "(<1 items>)"
    assert sent["kwargsrepr"] == "{'schedule': <str>, 'run_id': 3}"
