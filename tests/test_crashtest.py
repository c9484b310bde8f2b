"""scripts/crashtest, short: a real server SIGKILLed under load three times loses nothing (issue 8, item 5)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crashtest.py"


def test_three_sigkills_under_load_lose_no_acknowledged_write() -> None:
    """Three rounds of load and SIGKILL, then every 2xx'd submission, approval and acknowledgement is
    found intact, and the export verifies with the record log; the last line says so."""
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--rounds", "3", "--shortest", "0.4", "--longest", "1.2"],
        capture_output=True, text=True, timeout=200, check=False,
    )
    output = result.stdout + result.stderr
    last = result.stdout.strip().splitlines()[-1]
    found = re.fullmatch(r"crash: 3 rounds, (\d+) acknowledged writes, (\d+) lost", last)
    assert found is not None, output
    assert (result.returncode, int(found[2])) == (0, 0), output
    assert int(found[1]) > 0, output
