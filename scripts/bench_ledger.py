"""Benchmark the offline ledger verifier on a large, realistic export.

Builds an export of ``--entries`` canonical-JSON events (~250 bytes each) with a signed tree head
every ``--head-every`` entries in a temporary directory, then times ``verify_export`` on it, both
by default (the RFC 8785 canonical-form check only for the unsigned tail; here there is none) and
with ``strict=True`` (that check for every entry). The machine's noise makes absolute times
unreliable, so it also times two baselines over the very same entry bytes and prints ratios:

* ``sha256``: a bare loop computing each entry's RFC 9162 leaf hash (the least any verifier does);
* ``read+b64+sha256``: reading the file's lines, base64-decoding and hashing (no JSON, no tree).

Run: ``.venv/bin/python scripts/bench_ledger.py [--entries 200000] [--head-every 1000] [--repeat 3]``
"""

from __future__ import annotations

import argparse
import binascii
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import rfc8785

from exchange import crypto
from exchange.ledger import leaf_hash, sign_tree_head, verify_export, write_export
from exchange.ledger.tree import Frontier

_TYPES = ("packet.submitted", "packet.approved", "packet.delivered", "packet.opened", "packet.acknowledged")


def realistic_entry(seq: int) -> bytes:
    """One ledger event as the service writes it: codes, ids and a digest, never content."""
    return bytes(
        rfc8785.dumps(
            {
                "seq": seq,
                "time": f"2025-03-14T09:{seq // 60000 % 60:02d}:{seq // 1000 % 60:02d}.{seq % 1000:03d}Z",
                "type": _TYPES[seq % len(_TYPES)],
                "actor": f"member:{seq * 7919 % 4096:04x}-nsc",
                "agency": "agency:northshire-cs",
                "packet_id": f"pkt_{seq:010d}",
                "manifest_digest": "sha256:" + hashlib.sha256(b"%d" % seq).hexdigest(),
            }
        )
    )


def best_of(repeat: int, run: Callable[[], object]) -> float:
    """The fastest of ``repeat`` runs, in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def build_entries(count: int) -> list[bytes]:
    """``count`` realistic ledger entries, seq 0 first."""
    return [realistic_entry(seq) for seq in range(count)]


def measure(entries: list[bytes], *, head_every: int = 1000, repeat: int = 3, strict: bool = True) -> dict[str, float]:
    """Time the verifier and the two baselines over an export of ``entries``; seconds (best of ``repeat``) and sizes.

    Keys: ``sha256_s``, ``read_b64_sha256_s``, ``verify_s``, ``strict_s`` (only with ``strict``),
    ``heads``, ``export_mb`` and ``mean_entry_bytes``.
    """
    key = crypto.SigningKey.generate()
    frontier = Frontier()
    heads = []
    for size, entry in enumerate(entries, start=1):
        frontier.append(leaf_hash(entry))
        if size % head_every == 0:
            heads.append(sign_tree_head(size, frontier.root(), "2025-03-14T10:00:00.000Z", key))

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ledger-export.jsonl"
        write_export(path, entries, heads, server_key_id=key.key_id, exported_at="2025-03-14T10:00:00.000Z")

        def bare_sha256() -> None:
            for entry in entries:
                hashlib.sha256(b"\x00" + entry).digest()

        def read_decode_hash() -> None:
            with path.open("rb") as handle:
                for raw in handle:
                    if raw.startswith(b'{"entry":"'):
                        end = raw.index(b'"', 10)
                        hashlib.sha256(b"\x00" + binascii.a2b_base64(raw[10:end])).digest()

        def verify(strict: bool) -> Callable[[], None]:
            def run() -> None:
                report = verify_export(path, key.public_bytes, strict=strict)
                assert report.entries == len(entries)
            return run

        figures = {
            "sha256_s": best_of(repeat, bare_sha256),
            "read_b64_sha256_s": best_of(repeat, read_decode_hash),
            "verify_s": best_of(repeat, verify(strict=False)),
        }
        if strict:
            figures["strict_s"] = best_of(repeat, verify(strict=True))
        figures["export_mb"] = path.stat().st_size / 1e6
    figures["heads"] = len(heads)
    figures["mean_entry_bytes"] = sum(map(len, entries)) / len(entries)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=200_000)
    parser.add_argument("--head-every", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    figures = measure(build_entries(args.entries), head_every=args.head_every, repeat=args.repeat)
    print(
        f"export: {args.entries:,} entries (mean {figures['mean_entry_bytes']:.0f} bytes), "
        f"{figures['heads']:.0f} heads, {figures['export_mb']:.1f} MB"
    )
    sha_s = figures["sha256_s"]
    timings = (
        ("sha256 only", sha_s),
        ("read+b64+sha256", figures["read_b64_sha256_s"]),
        ("verify_export", figures["verify_s"]),
        ("verify --strict", figures["strict_s"]),
    )
    for name, seconds in timings:
        print(
            f"{name:>16}: {seconds:7.3f} s  {args.entries / seconds:>12,.0f} entries/s"
            f"  ratio to sha256 {seconds / sha_s:5.1f}x"
        )


if __name__ == "__main__":
    main()
