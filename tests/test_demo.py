"""``scripts/demo`` runs to the end: the story a new practitioner or auditor is shown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_to_the_end() -> None:
    """Referral, refusal, approval and offline ledger verification all behave as narrated."""
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "demo.py")],
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Demo finished: every step did what it should" in result.stdout
    assert "Verification failed" in result.stdout
