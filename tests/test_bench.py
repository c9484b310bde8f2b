"""The bench runs and says what it measured; its figures are judged by people, never by a timed test."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

HEADLINE = (
    "submit_per_s",
    "submit_p99_ms",
    "loop_per_s",
    "floor_per_s",
    "ratio_to_floor",
    "ledger_verify_per_s",
    "inclusion_proof_ms",
    "rss_mb_20k",
)


def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    """`scripts/bench --quick` finishes and writes a bench.json with every headline figure and its detail."""
    out, markdown = tmp_path / "bench.json", tmp_path / "bench.md"
    ran = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--out", str(out), "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=200, check=False,
    )
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True
    for key in HEADLINE:
        assert isinstance(result[key], int | float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["refused"] == {}
    for kind in ("submit", "floor", "loop"):
        for level in ("1", "16", "64"):
            figures = result["detail"][kind][level]
            assert figures["concurrency"] == int(level) and figures["done"] > 0
            assert {"per_s", "p50_ms", "p99_ms", "server_cores", "loadgen_cores"} <= figures.keys()
    assert result["detail"]["ledger"]["entries"] == 100_000
    assert result["detail"]["inclusion"]["tree_size"] == 100_000
    assert result["machine"]["nproc"] >= 1
    # A profile, or the reason there is none (py-spy needs ptrace, which some containers refuse).
    profile = result["detail"]["profile"]
    assert profile.get("top_self") or profile.get("error")
    table = markdown.read_text()
    assert "QUICK run" in table and "| durable submissions/s, concurrency 64 |" in table
    assert "QUICK" in ran.stderr
