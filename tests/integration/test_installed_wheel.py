"""A wheel of Lethe works away from the checkout: `pip install .` (and the image, which
installs the same way) carries every file the code reads at run time (the shipped
register, the migrations, the dashboard's templates) and looks for none of them in the
repository.

The wheel is built from a copy of the sources (so that no stale `build/` folder can put
in what the sources lack), installed with `pip install --target`, and its `lethe` runs
from a folder outside the repository with PYTHONPATH on that target: the wheel's `worker`
shadows the editable install's, which the first test checks. Embedded default only: no
server is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import ROOT, wait_for
from test_dashboard import free_port, get

# One xdist process builds the wheel once for the whole module (run-tests: --dist loadgroup).
pytestmark = pytest.mark.xdist_group("installed_wheel")

# What a checkout holds that is no source of the wheel.
NOT_SOURCES = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.pyc",
    "var",
    "test-artifacts",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
)


@dataclass
class Installed:
    wheel: Path
    sources: Path
    site: Path
    outside: Path
    env: dict[str, str]

    def run(self, *args: str, home: Path, timeout: float = 120, **env: str):
        return subprocess.run(
            [str(self.site / "bin" / "lethe"), *args],
            env={**self.env, "LETHE_HOME": str(home), **env},
            cwd=self.outside,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def _checked(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(command)}\n{result.stdout}\n{result.stderr}"


def copy_as_the_image_does(sources: Path) -> None:
    """What the Dockerfile's build stage copies into /src before `pip install /src`: the
    wheel is built from that alone, so a file the build needs and the image leaves out
    fails here, as it would fail `docker build`."""
    build_stage = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.MULTILINE)[1]
    copies = re.findall(r"^COPY ((?:\S+ )+)/src/(\S*)$", build_stage, re.MULTILINE)
    assert copies, "the Dockerfile's build stage copies nothing into /src"
    sources.mkdir(parents=True)
    for names, target in copies:
        for name in names.split():
            destination = sources / (target or name)
            if (ROOT / name).is_dir():
                shutil.copytree(ROOT / name, destination, ignore=NOT_SOURCES)
            else:
                shutil.copyfile(ROOT / name, destination)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    base = tmp_path_factory.mktemp("wheel")
    sources = base / "sources"
    copy_as_the_image_does(sources)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _checked([*pip, "wheel", str(sources), "--no-deps", "-w", str(base / "dist")], base)
    wheels = sorted((base / "dist").glob("lethe-*.whl"))
    assert len(wheels) == 1, wheels
    site = base / "site"
    _checked([*pip, "install", "--no-deps", "--target", str(site), str(wheels[0])], base)
    outside = base / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("LETHE_") and k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    return Installed(wheels[0], sources, site, outside, env)


def test_the_wheel_holds_every_file_of_the_package(installed: Installed):
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    for package in ("worker", "tasks", "schedules"):
        for path in sorted((installed.sources / package).rglob("*")):
            if path.is_file():
                name = path.relative_to(installed.sources).as_posix()
                assert name in names, f"the wheel lacks {name}"
    assert "worker/registers/negomarkets.yaml" in names


def test_the_commands_run_the_wheels_code_not_the_checkouts(installed: Installed):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import worker, worker.domain.register_file as r; print(worker.__file__); "
            "print(r.default_register_path())",
        ],
        env=installed.env,
        cwd=installed.outside,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    module, register = (Path(line) for line in result.stdout.splitlines())
    assert module.is_relative_to(installed.site), module
    assert register == installed.site / "worker" / "registers" / "negomarkets.yaml"
    assert register.is_file()


def test_register_check_and_show_read_the_installed_register(installed: Installed, tmp_path: Path):
    check = installed.run("register", "check", home=tmp_path / "home")
    assert check.returncode == 0, check.stderr
    shipped = installed.site / "worker" / "registers" / "negomarkets.yaml"
    assert check.stderr.startswith(f"{shipped}: ok"), check.stderr
    show = installed.run("register", "show", "--format", "html", home=tmp_path / "home")
    assert show.returncode == 0, show.stderr
    assert "NEGOMARKETS" in show.stdout


def test_db_upgrade_and_the_dashboard_pages_from_the_wheel(installed: Installed, tmp_path: Path):
    home = tmp_path / "home"
    upgrade = installed.run("db", "upgrade", home=home)
    assert upgrade.returncode == 0, upgrade.stderr
    assert "upgraded from nothing to" in upgrade.stdout + upgrade.stderr

    token = f"token-{uuid.uuid4().hex}"
    port = free_port()
    log = tmp_path / "dashboard.log"
    with log.open("w") as handle:
        process = subprocess.Popen(
            [str(installed.site / "bin" / "lethe"), "dashboard", "--port", str(port)],
            env={**installed.env, "LETHE_HOME": str(home), "LETHE_DASHBOARD_TOKEN": token},
            cwd=installed.outside,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:

        def answers() -> bool:
            assert process.poll() is None, f"dashboard died:\n{log.read_text()}"
            try:
                get(base + "/healthz", token)
                return True
            except OSError:
                return False

        wait_for(answers, 30, "the dashboard to answer", [log])
        for page in ("/", "/audit"):
            status, html = get(base + page, token)
            assert status == 200, (page, status, html[:2000])
            assert "Lethe · retention dashboard" in html, page
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def test_the_demo_runs_from_the_wheel(installed: Installed, tmp_path: Path):
    # The demo's worker is `lethe worker` beside this Python; PYTHONPATH gives it the
    # wheel's code too.
    demo = installed.run("demo", "--people", "150", home=tmp_path / "home", timeout=600)
    assert demo.returncode == 0, f"{demo.stdout[-3000:]}\n{demo.stderr[-3000:]}"
    assert "demo shop built:" in demo.stdout and "A few rows after" in demo.stdout
    assert "personal data in the audit trail: none" in demo.stdout
    assert "FAILED" not in demo.stdout
