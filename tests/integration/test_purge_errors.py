"""`lethe purge` when its settings are wrong: a clear error, no traceback, no false alarm."""

from __future__ import annotations

from harness import Lethe


def _no_traceback(result) -> None:
    assert "Traceback" not in result.stderr, result.stderr


def _last_sweep(lethe: Lethe) -> str:
    status = lethe.run("status", check=False).stdout
    return next(line for line in status.splitlines() if line.strip().startswith("last sweep"))


def test_a_shop_url_that_is_not_a_database_url_gets_a_clear_error(embedded: Lethe):
    for url in ("notaurl", "mysql://shop@127.0.0.1/shop"):
        embedded.env["LETHE_SHOP_DATABASE_URL"] = url
        result = embedded.run("purge", "--now", "2026-11-26T03:00:00+01:00", check=False)
        assert result.returncode == 1
        _no_traceback(result)
        assert "LETHE_SHOP_DATABASE_URL is not a database URL" in result.stderr
        assert "postgresql+psycopg://" in result.stderr


def test_a_failed_dry_run_is_not_reported_as_a_failed_sweep(embedded: Lethe):
    embedded.env["LETHE_SHOP_DATABASE_URL"] = f"sqlite:///{embedded.home / 'missing.sqlite3'}"
    dry = embedded.run("purge", "--dry-run", check=False)
    assert dry.returncode == 1 and "does not exist" in dry.stderr
    _no_traceback(dry)
    assert "ALERT" not in dry.stderr
    assert "none recorded yet" in _last_sweep(embedded)
    real = embedded.run("purge", check=False)
    assert real.returncode == 1
    assert "failed" in _last_sweep(embedded)


def test_a_broken_register_is_named_by_file_and_line(embedded: Lethe):
    broken = embedded.home / "register.yaml"
    broken.write_text("name: shop\nactivities:\n  - id: [unclosed\n")
    embedded.env["LETHE_REGISTER"] = str(broken)
    result = embedded.run("purge", check=False)
    assert result.returncode == 1
    _no_traceback(result)
    assert f"{broken}:" in result.stderr


def test_approving_a_run_that_does_not_exist_says_where_runs_are_named(embedded: Lethe):
    result = embedded.run("purge", "--approve", "9999", check=False)
    assert result.returncode == 1
    _no_traceback(result)
    assert "there is no run 9999" in result.stderr and "lethe status" in result.stderr


def test_a_sweep_with_a_clock_in_the_future_is_refused_but_a_dry_run_may_look_ahead(
    lethe: Lethe, request
):
    from sweeping import make_shop, seed_store

    shop = make_shop(lethe, request, people=40)
    seed_store(lethe, shop.data.events)
    before = shop.rows("customers")
    typo = "2036-11-26T03:00:00+01:00"
    refused = lethe.run("purge", "--now", typo, check=False)
    assert refused.returncode == 2
    _no_traceback(refused)
    assert "ahead of the real clock" in refused.stderr and "--dry-run" in refused.stderr
    assert shop.rows("customers") == before
    assert shop.store("select count(*) from purge_runs") == [(0,)]
    dry = shop.purge("--dry-run", "--now", typo)
    assert dry["status"] == "dry_run" and dry["due"] > 0
    assert shop.rows("customers") == before
