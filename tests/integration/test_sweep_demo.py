"""`lethe demo` tells the whole story on the embedded default, in under a minute."""

from __future__ import annotations

import time

from harness import Lethe


def test_the_demo_runs_on_the_embedded_default_in_under_a_minute(embedded: Lethe):
    started = time.monotonic()
    result = embedded.run("demo", "--people", "150", timeout=90)
    took = time.monotonic() - started
    out = result.stdout
    assert took < 60, f"the demo took {took:.0f} s"
    assert "demo shop built:" in out and "A few rows before" in out and "A few rows after" in out
    assert "stopped before touching anything" in out and "lethe purge --approve" in out
    assert "invoices kept by law:" in out and "held:" in out
    assert "a second beat ticks for the same night: a no-op (1 run for that slot)" in out
    assert "personal data in the audit trail: none" in out
    assert "is_suppressed(<" in out and ") = True" in out
    assert "proof of erasure for customer:" in out and "kept: crm.invoices until" in out
    assert "FAILED" not in out
