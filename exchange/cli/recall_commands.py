"""``exchange recall``, ``exchange correct`` and ``exchange subject``: putting a mistake right, and the
auditor's view of every event about one child.

``exchange subject`` takes the pseudonym, or the identifier with the deployment's linkage key: the
pseudonym is then computed here and the identifier never leaves this computer.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exchange import schemas
from exchange.cli import output
from exchange.client import ExchangeClient
from exchange.errors import InvalidRequest
from exchange.ledger.subject_export import verify_subject_export


def _reasons() -> list[str]:
    reason = schemas.validator("recall.v1").schema["properties"]["reason"]
    return list(reason["enum"])


def register(sub: Any) -> None:
    from exchange.cli.main import _client_options, _common, with_client

    p = sub.add_parser("recall", help="take back a packet you sent that nobody has opened yet")
    _client_options(p)
    p.add_argument("packet_id")
    p.add_argument("--reason", required=True, choices=_reasons(), help="why, as a code (goes into the ledger)")
    p.set_defaults(func=with_client(_recall))

    p = sub.add_parser(
        "correct", help="send a correction of a packet you sent: to the same recipients, naming the wrong fields"
    )
    _client_options(p)
    p.add_argument("earlier_id", help="the packet being corrected (pkt_...)")
    p.add_argument("file", type=Path, help="the packet file with the right values (without 'to': same recipients)")
    p.add_argument("--fields", required=True, help="comma-separated names of the fields that were wrong")
    p.set_defaults(func=with_client(_correct))

    p = sub.add_parser("subject", help="(auditor) every ledger event about one child, by pseudonym")
    _client_options(p)
    p.add_argument("pseudonym", nargs="?", help="the subject's pseudonym (64 hex characters)")
    p.add_argument(
        "--identifier",
        help="the child's identifier (e.g. NHS number): turned into the pseudonym here with --linkage-key, never sent",
    )
    p.add_argument("--start", type=int, default=0, help="first ledger position to show")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--export", type=Path, help="write the events with their proofs to this file (JSON lines)")
    p.add_argument("--server-key", type=Path, help="server public key file, to check the signed head of an export")
    p.set_defaults(func=with_client(_subject))

    p = sub.add_parser("subject-verify", help="check a subject export offline with the server's public key")
    _common(p)
    p.add_argument("export", type=Path)
    p.add_argument("--server-key", type=Path, required=True, help="the server's public key file (base64)")
    p.add_argument("--pseudonym", help="the subject the export must be about")
    p.set_defaults(func=_verify)

    output.register_printer("recalled", _print_recalled)
    output.register_printer("corrected", _print_corrected)
    output.register_printer("subject_events", _print_events)
    output.register_printer("subject_export", _print_export)


async def _recall(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "recalled"} | await client.recall(args.packet_id, args.reason)


async def _correct(client: ExchangeClient, args: argparse.Namespace) -> Any:
    from exchange.cli.main import _load_json

    fields = [name.strip() for name in args.fields.split(",") if name.strip()]
    if not fields:
        raise InvalidRequest("Name the fields that were wrong: --fields child_date_of_birth,child_address.")
    packet_file = _load_json(args.file)
    result = await client.correct(args.earlier_id, packet_file, fields, base_dir=args.file.resolve().parent)
    return {"kind": "corrected", "corrects": args.earlier_id, "corrected_fields": fields} | result


def _pseudonym(client: ExchangeClient, args: argparse.Namespace) -> str:
    if (args.pseudonym is None) == (args.identifier is None):
        raise InvalidRequest("Give the subject's pseudonym, or --identifier with --linkage-key (not both).")
    if args.identifier is not None:
        return client.pseudonym_of(args.identifier)
    return str(args.pseudonym).strip().lower()


async def _subject(client: ExchangeClient, args: argparse.Namespace) -> Any:
    from exchange.cli.ledger_commands import _server_key, _write_whole

    pseudonym = _pseudonym(client, args)
    if args.export is not None:
        text, verified = await client.subject_export(pseudonym, _server_key(args.server_key))
        _write_whole(args.export, text)
        return {"kind": "subject_export", "file": str(args.export), "verified": True} | verified.as_json()
    return {"kind": "subject_events"} | await client.subject(pseudonym, start=args.start, limit=args.limit)


def _verify(args: argparse.Namespace) -> int:
    from exchange.cli.ledger_commands import read_server_key

    try:
        lines = args.export.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidRequest(f"There is no file {args.export}.") from None
    verified = verify_subject_export(lines, read_server_key(args.server_key), subject=args.pseudonym)
    return output.emit(
        args, {"kind": "subject_export", "file": str(args.export), "verified": True} | verified.as_json()
    )


def _print_recalled(result: Mapping[str, Any]) -> str:
    return (
        f"Recalled packet {result['packet_id']} ({result['reason']}): {len(result['recipients'])} recipient(s) can"
        f" no longer open it, its sealed content is deleted and nothing more is owed on it"
        f" (ledger position {result['ledger']['seq']})."
    )


def _print_corrected(result: Mapping[str, Any]) -> str:
    if result["status"] == "awaiting_approval":
        state = (
            "is held for a manager's approval; once it is delivered it supersedes the earlier packet,"
            " which stays as it is until then"
        )
    else:
        state = "was delivered to the same recipients; they now see the earlier packet as superseded by it"
    return (
        f"Correction {result['packet_id']} of {result['corrects']} {state}.\n"
        f"  fields corrected: {', '.join(result['corrected_fields'])}\n"
        f"  recorded in the ledger at position {result['ledger']['seq']}"
    )


def _print_events(result: Mapping[str, Any]) -> str:
    lines = [f"Subject {result['subject']}"]
    packets = result.get("packets") or []
    lines.append(f"  {len(packets)} packet(s) name this subject:")
    for packet in packets:
        extra = f", superseded by {packet['superseded_by']}" if packet.get("superseded_by") else ""
        lines.append(
            f"    {packet['packet_id']}  {packet['purpose']}  from {packet['from']['member']}"
            f"  [{packet['status']}{extra}]  {output.local_time(packet['created'])}"
        )
    lines.append("  events:")
    for item in result["entries"]:
        entry = item["entry"]
        actor = (entry.get("actor") or {}).get("member") or "operator"
        about = f"  packet {entry['packet']}" if entry.get("packet") else ""
        lines.append(f"  {item['seq']:>6}  {entry['time']}  {entry['type']:<26} by {actor}{about}")
    if result.get("next_start") is not None:
        lines.append(f"  (more: --start {result['next_start']})")
    lines.append("  (this look-up is itself recorded in the ledger)")
    return "\n".join(lines)


def _print_export(result: Mapping[str, Any]) -> str:
    checked = (
        "and the head's signature" if result["head_signature_checked"] else "(head signature not checked: --server-key)"
    )
    text = (
        f"Verified {result['file']}: {result['entries']} event(s) about subject {result['subject']}, each included in"
        f" the signed ledger of size {result['signed_size']} {checked}."
    )
    if result["unproven"]:
        text += f"\n  {len(result['unproven'])} newer event(s) are not under that head yet: {result['unproven']}"
    text += "\n  (A proof shows each event is in the ledger; compare with a full export to be sure none is missing.)"
    return text
