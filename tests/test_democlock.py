"""The demonstration clock moves only a demo deployment's time, by the seconds written in a file."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from exchange.democlock import FileOffsetClock
from exchange.domain import utc_now


def test_the_clock_follows_the_offset_file(tmp_path: Path) -> None:
    """Writing 3600 to the file moves the clock an hour ahead; a missing or bad file means no offset."""
    path = tmp_path / "offset"
    clock = FileOffsetClock(path, reread_seconds=0)
    assert abs(clock() - utc_now()) < timedelta(seconds=5)
    path.write_text("3600\n")
    assert timedelta(minutes=59) < clock() - utc_now() < timedelta(minutes=61)
    path.write_text("not a number")
    assert abs(clock() - utc_now()) < timedelta(seconds=5)


def test_serve_refuses_a_demo_clock_outside_a_demo(tmp_path: Path) -> None:
    """A real deployment always runs on the real clock: --demo-clock needs --seed-demo."""
    folders = ["--data-dir", str(tmp_path / "var"), "--keys-dir", str(tmp_path / "keys")]
    result = subprocess.run(
        [sys.executable, "-m", "exchange.cli.main", "serve", *folders, "--demo-clock", str(tmp_path / "offset")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "demonstrations only" in result.stderr
