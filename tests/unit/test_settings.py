"""Settings read from the environment: a value Lethe cannot run with is refused at start,
with its name, instead of failing every sweep later."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from worker.settings import SettingsError, load_settings


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("LETHE_DEAD_LETTER_DAYS", "dead_letter_days"),
        ("LETHE_SUPPRESSION_DAYS", "suppression_days"),
        ("LETHE_FORGET_AFTER_DAYS", "forget_after_days"),
    ],
)
def test_a_period_beyond_a_century_is_refused_at_start(name: str, field: str, tmp_path: Path):
    # 800,000 days before any date is before year 1: each sweep raised OverflowError
    with pytest.raises(SettingsError, match=f"{name}='800000' is more than 36525"):
        load_settings({"LETHE_HOME": str(tmp_path), name: "800000"})
    century = load_settings({"LETHE_HOME": str(tmp_path), name: "36525"})
    assert getattr(century.sweep, field) == 36525


def test_a_limit_that_is_not_a_number_is_refused(tmp_path: Path):
    with pytest.raises(SettingsError, match="LETHE_SWEEP_MAX_FACTOR='nan' is not a number"):
        load_settings({"LETHE_HOME": str(tmp_path), "LETHE_SWEEP_MAX_FACTOR": "nan"})


def test_an_empty_home_is_the_default_home_not_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.chdir(tmp_path)
    assert load_settings({"LETHE_HOME": ""}).home == tmp_path / "var"


def test_an_empty_queue_prefix_is_the_default_prefix(tmp_path: Path):
    assert load_settings({"LETHE_HOME": str(tmp_path), "LETHE_QUEUE_PREFIX": ""}).queue_prefix == (
        "lethe"
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("LETHE_PREFETCH", "abc", "is not a whole number"),
        ("LETHE_PREFETCH", "0", "must be positive"),
        ("LETHE_VISIBILITY_TIMEOUT", "", None),
        ("LETHE_VISIBILITY_TIMEOUT", "1h", "is not a whole number"),
    ],
)
def test_broker_settings_are_refused_with_their_name(
    name: str, value: str, says: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from worker.app import celery_config

    env = {
        "LETHE_HOME": str(tmp_path),
        "LETHE_BROKER_URL": "redis://x:1/0",
        "LETHE_SECRET": "s" * 32,
    }
    settings = load_settings(env)
    monkeypatch.setenv(name, value)
    if says is None:  # set but empty: the default, as for every setting
        assert celery_config(settings)["broker_transport_options"]["visibility_timeout"] == 3600
        return
    with pytest.raises(SettingsError, match=f"{name}={value!r} {says}"):
        celery_config(settings)


def test_the_default_visibility_timeout_outlasts_every_retry_delay():
    # a task waiting for its retry longer than this would be delivered twice
    import tasks.ingest
    import tasks.sweep
    from worker.app import DEFAULT_VISIBILITY_TIMEOUT

    assert DEFAULT_VISIBILITY_TIMEOUT > tasks.sweep.RETRY_BACKOFF_MAX
    assert DEFAULT_VISIBILITY_TIMEOUT > tasks.ingest.RETRY_BACKOFF_MAX


def test_every_retry_delay_ends_well_before_rabbitmq_gives_the_task_back():
    # a worker holds a task waiting for its retry unacknowledged; past RabbitMQ's
    # consumer_timeout the server closes its channel and delivers the task again
    import tasks.ingest
    import tasks.sweep
    from worker.app import RABBITMQ_CONSUMER_TIMEOUT

    for delay in (tasks.sweep.RETRY_BACKOFF_MAX, tasks.ingest.RETRY_BACKOFF_MAX):
        assert delay + 600 <= RABBITMQ_CONSUMER_TIMEOUT


@pytest.mark.parametrize("url", ["amqp://guest:guest@rabbit:5672//", "amqps://u:p@rabbit//"])
def test_rabbitmq_confirms_each_publish_and_every_name_carries_the_queue_prefix(
    url: str, tmp_path: Path
):
    from worker.app import celery_config

    settings = load_settings(
        {
            "LETHE_HOME": str(tmp_path),
            "LETHE_BROKER_URL": url,
            "LETHE_SECRET": "s" * 32,
            "LETHE_QUEUE_PREFIX": "shop-a",
        }
    )
    config = celery_config(settings)
    options = config["broker_transport_options"]
    assert options["confirm_publish"] is True
    assert "visibility_timeout" not in options and "global_keyprefix" not in options
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    for name in ("task_default_queue", "control_exchange", "event_exchange", "event_queue_prefix"):
        assert config[name].startswith("shop-a."), name


def test_the_sweeps_the_median_reads_are_settings_the_plan_uses(tmp_path: Path):
    from worker.domain.sweep_rules import approval_reasons
    from worker.sweeps.plan import limits_of

    env = {"LETHE_HOME": str(tmp_path), "LETHE_SWEEP_HISTORY": "4"}
    limits = limits_of(load_settings({**env, "LETHE_SWEEP_MIN_HISTORY": "4"}))
    assert (limits.history, limits.min_history) == (4, 4)
    # three sweeps done of the four it waits for: 1,000 due is not yet compared with them
    assert approval_reasons(1000, [10, 10, 10], False, {}, {}, limits) == []
    fewer = limits_of(load_settings({**env, "LETHE_SWEEP_MIN_HISTORY": "3"}))
    assert "x the median" in approval_reasons(1000, [10, 10, 10], False, {}, {}, fewer)[0]


def test_a_median_that_would_never_be_compared_is_refused_at_start(tmp_path: Path):
    with pytest.raises(SettingsError, match="LETHE_SWEEP_MIN_HISTORY=5 is more than"):
        load_settings(
            {
                "LETHE_HOME": str(tmp_path),
                "LETHE_SWEEP_HISTORY": "3",
                "LETHE_SWEEP_MIN_HISTORY": "5",
            }
        )


@pytest.mark.parametrize(
    ("url", "tls"),
    [
        ("redis://cache:6379/0", False),
        # Lethe names its own transport class, so kombu no longer sees the scheme: TLS
        # must still be on, and the certificate checked unless the URL says otherwise
        ("rediss://:pw@cache:6380/0", {"ssl_cert_reqs": ssl.CERT_REQUIRED}),
        ("rediss://cache:6380/0?ssl_cert_reqs=none", {"ssl_cert_reqs": ssl.CERT_NONE}),
    ],
)
def test_a_redis_broker_connects_with_lethes_transport_and_tls_as_its_url_says(
    url: str, tls: object, tmp_path: Path
):
    from celery import Celery

    from worker.app import celery_config
    from worker.brokers.redis_transport import TRANSPORT

    settings = load_settings(
        {"LETHE_HOME": str(tmp_path), "LETHE_BROKER_URL": url, "LETHE_SECRET": "s" * 32}
    )
    app = Celery(set_as_current=False)
    app.conf.update(celery_config(settings))
    connection = app.connection_for_write()
    assert connection.transport_cls == TRANSPORT
    assert connection.hostname == "cache" and connection.ssl == tls
