"""``exchange ledger``: the auditor's view of the record, and the offline verifier anyone can run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exchange import crypto
from exchange.cli import output
from exchange.client import ExchangeClient
from exchange.errors import InvalidRequest, LedgerProofError
from exchange.ledger import TreeHead, verify_export
from exchange.ledger.proofs import check_consistency_answer, check_inclusion_answer


def register(sub: Any) -> None:
    from exchange.cli.main import _client_options, _common, with_client

    ledger = sub.add_parser("ledger", help="the tamper-evident record of every event")
    commands = ledger.add_subparsers(dest="ledger_command", required=True)

    p = commands.add_parser("head", help="(auditor) the latest signed tree head")
    _client_options(p)
    p.set_defaults(func=with_client(_head))

    p = commands.add_parser("show", help="(auditor) entries, filtered")
    _client_options(p)
    for name in ("type", "agency", "member", "packet", "since", "until"):
        p.add_argument(f"--{name}")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=with_client(_show))

    p = commands.add_parser("proof", help="(auditor) an inclusion or consistency proof, checked locally")
    _client_options(p)
    p.add_argument("--seq", type=int, help="entry to prove included")
    p.add_argument("--size", type=int, help="signed head size to prove against (default: latest)")
    p.add_argument("--from", dest="old_size", type=int, help="older head size for a consistency proof")
    p.add_argument("--server-key", type=Path, help="server public key file, to check the head's signature")
    p.set_defaults(func=with_client(_proof))

    p = commands.add_parser("receipt", help="proof that an event of yours (by ledger position) is recorded")
    _client_options(p)
    p.add_argument("seq", type=int)
    p.add_argument("--server-key", type=Path, help="server public key file, to check the head's signature")
    p.add_argument(
        "--head-file",
        type=Path,
        help="where the last signed head you verified is kept, so the next must extend it"
        " (default: your key file's trust file, KEY.trust.json, shared with key transparency)",
    )
    p.set_defaults(func=with_client(_receipt))

    p = commands.add_parser("export", help="(auditor) download the ledger with its signed heads (JSON lines)")
    _client_options(p)
    p.add_argument("--output", "-o", type=Path, required=True)
    p.set_defaults(func=with_client(_export))

    p = commands.add_parser("verify", help="verify an export offline with only the server's public key")
    _common(p)
    p.add_argument("--export", type=Path, required=True)
    p.add_argument("--server-key", type=Path, required=True, help="the server's public key file (base64)")
    p.add_argument(
        "--log",
        type=Path,
        action="append",
        help="also check the record log (JSON lines) against the ledger; repeat it for the files of a rotated log",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="check every entry is RFC 8785 canonical JSON, not only those after the last signed head (slower)",
    )
    p.set_defaults(func=_verify)

    output.register_printer("ledger_head", _print_head)
    output.register_printer("ledger_entries", _print_entries)
    output.register_printer("ledger_proof", _print_proof)
    output.register_printer("ledger_export", lambda r: f"Wrote {r['lines']} lines to {r['file']}.")
    output.register_printer("ledger_verified", _print_verified)


def read_server_key(path: Path) -> bytes:
    try:
        return crypto.b64decode(path.read_text().strip(), what="server public key")
    except FileNotFoundError:
        raise InvalidRequest(f"There is no server key file {path}.") from None


async def _head(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "ledger_head"} | await client.request("GET", "/v1/ledger/head")


async def _show(client: ExchangeClient, args: argparse.Namespace) -> Any:
    query = {k: getattr(args, k) for k in ("type", "agency", "member", "packet", "since", "until")}
    query |= {"start": args.start, "limit": args.limit}
    from urllib.parse import urlencode

    qs = urlencode({k: v for k, v in query.items() if v is not None})
    return {"kind": "ledger_entries"} | await client.request("GET", f"/v1/ledger/entries?{qs}")


def _server_key(path: Path | None) -> bytes | None:
    return read_server_key(path) if path is not None else None


def _inclusion_result(answer: Mapping[str, Any], head: TreeHead, key_checked: bool) -> dict[str, Any]:
    return {
        "kind": "ledger_proof",
        "proof_type": "inclusion",
        "seq": answer["seq"],
        "size": head.size,
        "head_signature_checked": key_checked,
        "verified": True,
        "result": dict(answer),
    }


async def _proof(client: ExchangeClient, args: argparse.Namespace) -> Any:
    if args.old_size is not None:
        to = f"&to={args.size}" if args.size is not None else ""
        result = await client.request("GET", f"/v1/ledger/proof/consistency?from={args.old_size}{to}")
        old, new = check_consistency_answer(result, _server_key(args.server_key))
        return {
            "kind": "ledger_proof",
            "proof_type": "consistency",
            "from": old.size,
            "size": new.size,
            "head_signature_checked": args.server_key is not None,
            "verified": True,
            "result": result,
        }
    if args.seq is None:
        raise InvalidRequest("Give --seq N for an inclusion proof, or --from N for a consistency proof.")
    size = f"&size={args.size}" if args.size is not None else ""
    result = await client.request("GET", f"/v1/ledger/proof/inclusion?seq={args.seq}{size}")
    head = check_inclusion_answer(result, _server_key(args.server_key))
    return _inclusion_result(result, head, args.server_key is not None)


async def _receipt(client: ExchangeClient, args: argparse.Namespace) -> Any:
    head_file = args.head_file
    trust = client.trust
    # One remembered head per key file: the one key transparency checks recipients' keys against.
    seen = _read_head(head_file) if head_file is not None else trust.head
    server_key = _server_key(args.server_key) or trust.server_key
    result, head = await client.receipt(args.seq, server_key, last_head=seen)
    if seen is None or head.size > seen.size:
        if head_file is not None:
            _write_whole(head_file, json.dumps(head.to_json(), indent=2) + "\n")
        else:
            trust.head = head
            trust.save()
    return _inclusion_result(result, head, args.server_key is not None) | {
        "extends_head_seen": seen.size if seen is not None else None
    }


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` beside ``path`` and rename it into place: a reader never sees half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    partial.replace(path)


def _read_head(path: Path | None) -> TreeHead | None:
    """The last head this member verified, if they keep one; a damaged file is an error, not a fresh start."""
    if path is None or not path.exists():
        return None
    try:
        return TreeHead.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, LedgerProofError) as error:
        raise InvalidRequest(f"{path} does not hold a signed tree head: {error}") from None


async def _export(client: ExchangeClient, args: argparse.Namespace) -> Any:
    text = await client.request_text("GET", "/v1/ledger/export")
    _write_whole(args.output, text)
    return {"kind": "ledger_export", "file": str(args.output), "lines": text.count("\n")}


def _verify(args: argparse.Namespace) -> int:
    key = read_server_key(args.server_key)
    show_progress = not args.json and sys.stderr.isatty()

    def progress(done: int) -> None:
        if show_progress:
            print(f"\r  verified {done:,} entries...", end="", file=sys.stderr, flush=True)

    report = verify_export(args.export, key, log_path=args.log, progress=progress, strict=args.strict)
    if show_progress:
        print(file=sys.stderr)
    return output.emit(args, {"kind": "ledger_verified", "export": str(args.export)} | report.as_json())


def _print_head(result: Mapping[str, Any]) -> str:
    head = result["head"]
    return (
        f"Signed tree head: size {head['size']}, root {head['root_hash']}\n  signed at {head['timestamp']}"
        f" by {head['key_id']}\n  ledger now holds {result['ledger_size']} entries"
    )


def _print_entries(result: Mapping[str, Any]) -> str:
    lines = []
    for item in result["entries"]:
        entry = item["entry"]
        actor = entry.get("actor") or {}
        lines.append(
            f"{item['seq']:>6}  {entry['time']}  {entry['type']:<26} by {actor.get('member') or 'operator'}"
            + (f"  packet {entry['packet']}" if entry.get("packet") else "")
        )
    if result.get("next_start") is not None:
        lines.append(f"(more: --start {result['next_start']})")
    return "\n".join(lines) or "No entries match."


def _print_proof(result: Mapping[str, Any]) -> str:
    checked = (
        "and its signature" if result["head_signature_checked"] else "(head signature not checked: give --server-key)"
    )
    if result["proof_type"] == "consistency":
        return f"Verified: the signed tree of size {result['from']} is a prefix of size {result['size']} {checked}."
    text = f"Verified: entry {result['seq']} is included in the signed tree of size {result['size']} {checked}."
    if result.get("extends_head_seen") is not None:
        text += f"\nIt extends the signed tree of size {result['extends_head_seen']} you verified before."
    return text


def _print_verified(result: Mapping[str, Any]) -> str:
    return "\n".join(f"  {k}: {v}" for k, v in result.items() if k != "kind").join(
        [f"Ledger export {result['export']} verified.\n", ""]
    )
