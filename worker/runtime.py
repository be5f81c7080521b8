"""What a process loads once: settings, the register, the configured logger."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from worker.domain.register import Register
from worker.domain.register_file import load_register
from worker.logs import configure_logging, log
from worker.settings import Settings, current_settings


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    register: Register
    log: Any


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    """Loaded on first use in each process; a register change needs a worker restart (a
    register that fails to load is tried again on the next task)."""
    settings = current_settings()
    configure_logging(settings.secret)
    return Runtime(settings=settings, register=load_register(settings.register_path), log=log)
