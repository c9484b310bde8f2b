"""How the CLI prints: JSON for machines (``--json``), short plain sentences for people."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from exchange.config import Config
from exchange.domain import parse_iso


def emit(args: argparse.Namespace, result: Any) -> int:
    """Print ``result``; return the exit code (0)."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2, sort_keys=True))
        return 0
    kind = result.get("kind") if isinstance(result, Mapping) else None
    printer = _PRINTERS.get(kind or "", _generic)
    print(printer(result))
    if isinstance(result, Mapping) and result.get("next_cursor"):
        # A listing never hides work silently: say how to see the rest.
        print(f"More follow: run the same command with --cursor {result['next_cursor']}")
    return 0


def error(args: argparse.Namespace, problem: Mapping[str, Any], status: int | None = None) -> int:
    """Print a refusal or failure; exit code 1 (2 for a bad command line is argparse's)."""
    if getattr(args, "json", False):
        print(json.dumps({"error": dict(problem), "status": status}, indent=2, sort_keys=True))
        return 1
    code = str(problem.get("code", ""))
    prefix = "Verification failed" if code.startswith("ledger.") else "Refused"
    print(f"{prefix}: {problem.get('detail') or problem.get('title')}", file=sys.stderr)
    where = [f"{k} {problem[k]}" for k in ("problem", "line", "seq") if problem.get(k) is not None]
    if where:
        print(f"  at: {', '.join(where)}", file=sys.stderr)
    for violation in problem.get("violations", []) or []:
        print(f"  - [{violation.get('rule')}] {violation.get('message')}", file=sys.stderr)
        if violation.get("path"):
            print(f"      at {violation['path']}", file=sys.stderr)
        if violation.get("source"):
            print(f"      from: {violation['source']}", file=sys.stderr)
    for err in problem.get("errors", []) or []:
        print(f"  - {err.get('path')}: {err.get('message')}", file=sys.stderr)
    if problem.get("code"):
        print(f"  (code: {problem['code']})", file=sys.stderr)
    return 1


def _generic(result: Any) -> str:
    return json.dumps(result, indent=2, sort_keys=True)


def local_time(value: str | None) -> str:
    """A server time (UTC) as the reader's own clock shows it, with its zone: ``Mon 13 Jul 2026 16:00 BST``."""
    if not value:
        return "-"
    try:
        moment = parse_iso(value)
    except ValueError:
        return value
    return moment.astimezone().strftime("%a %d %b %Y %H:%M %Z")


def _packet_line(packet: Mapping[str, Any]) -> str:
    return (
        f"{packet['packet_id']}  {packet['purpose']}  ({packet['kind']}, {packet['urgency']})  "
        f"sent {local_time(packet['created'])}"
    )


def _inbox(result: Mapping[str, Any]) -> str:
    packets: Sequence[Mapping[str, Any]] = result["packets"]
    if not packets:
        return "Your inbox is empty."
    lines = [f"{len(packets)} packet(s) in your inbox:"]
    for packet in packets:
        delivery = packet["delivery"]
        lines.append(f"  {_packet_line(packet)}")
        note = _correction_note(packet)
        live = packet.get("status") not in ("recalled", "superseded")
        lines.append(
            f"      from {packet['from']['member']} ({packet['from']['agency']}); you: {delivery['loop']}"
            + (f"; acknowledge by {local_time(packet['ack_due'])}" if packet.get("ack_due") and live else "")
        )
        if note:
            lines.append(f"      {note}")
    return "\n".join(lines)


def _correction_note(packet: Mapping[str, Any]) -> str:
    """Recalled, superseded by a correction, or a correction itself: what the recipient should know first."""
    fields = ", ".join(packet.get("corrected_fields") or [])
    if packet.get("status") == "recalled":
        return "RECALLED by the sender before it was opened; its content is deleted."
    if packet.get("superseded_by"):
        return f"SUPERSEDED by the correction {packet['superseded_by']} (fields that were wrong: {fields})."
    if packet.get("supersedes"):
        return f"This corrects {packet['supersedes']} (fields that were wrong: {fields})."
    return ""


def _outbox(result: Mapping[str, Any]) -> str:
    packets: Sequence[Mapping[str, Any]] = result["packets"]
    if not packets:
        return "You have not sent any packets."
    lines = [f"{len(packets)} packet(s) sent:"]
    for packet in packets:
        lines.append(f"  {_packet_line(packet)}  [{packet['status']}]")
        for r in packet["recipients"]:
            action = f"; latest action: {r['action']}" if r.get("action") else ""
            lines.append(f"      to {r['member']}: {r.get('loop') or r['status']}{action}")
            lines.append(
                f"        delivered {local_time(r['delivered_at'])}  opened {local_time(r['opened_at'])}"
                f"  acknowledged {local_time(r['acknowledged_at'])}"
                + (f"  reported {local_time(r['reported_at'])}" if r.get("reported_at") else "")
                + (f"  confirmed {local_time(r['confirmed_at'])}" if r.get("confirmed_at") else "")
            )
    return "\n".join(lines)


def _sent(result: Mapping[str, Any]) -> str:
    if result["status"] == "awaiting_approval":
        head = (
            f"Packet {result['packet_id']} is held for a manager's approval (sharing without consent);"
            " it will be delivered once a manager of your agency approves it."
        )
    else:
        head = f"Packet {result['packet_id']} was checked against the sharing rules and delivered."
    lines = [head, f"  manifest digest {result['manifest_digest']}"]
    if result.get("ack_due"):
        lines.append(f"  recipients must acknowledge by {local_time(result['ack_due'])}")
    if result.get("approval_due"):
        lines.append(f"  a manager's approval is owed by {local_time(result['approval_due'])}")
    ledger = result.get("ledger") or {}
    lines.append(f"  recorded in the ledger at position {ledger.get('seq')}")
    lines.extend(skipped_lines(result))
    return "\n".join(lines)


def _opened(result: Mapping[str, Any]) -> str:
    manifest = result["manifest"]
    body = result["body"]
    lines = [
        f"Packet {result['packet_id']}: signature, digests and field list verified.",
        f"  purpose: {manifest['purpose']}   kind: {manifest['kind']}   urgency: {manifest['urgency']}",
        f"  from: {manifest['sender']['member']} ({manifest['sender']['agency']})",
        f"  lawful basis: {json.dumps(manifest.get('lawful_basis'))}",
        f"  consent: {(manifest.get('consent') or {}).get('status')}",
    ]
    if body.get("necessity"):
        lines.append(f"  why sharing is necessary: {body['necessity']}")
    if result.get("superseded_by"):
        lines.append(
            f"  SUPERSEDED by the correction {result['superseded_by']}: the fields that were wrong here are"
            f" {', '.join(result.get('corrected_fields') or [])}; open the correction for the right values."
        )
    if manifest.get("corrects"):
        lines.append(
            f"  This corrects {manifest['corrects']['packet_id']}; fields that were wrong there:"
            f" {', '.join(manifest['corrects']['fields'])}."
        )
    lines.append("  fields:")
    for field in body.get("fields", []):
        label = field.get("label")
        extra = ""
        if label == "fact_reported" and field.get("source"):
            extra = f", reported by {field['source']}"
        elif label == "opinion" and field.get("author_role"):
            extra = f", opinion of {field['author_role']}"
        value = field.get("value")
        shown = json.dumps(value) if not isinstance(value, str) else value
        lines.append(
            f"    {field.get('name')}: {shown}   [{label}{extra}; {field.get('currency')}"
            f"{', as of ' + field['as_of'] if field.get('as_of') else ''}]"
        )
    if body.get("narrative"):
        lines.append(f"  narrative: {body['narrative']}")
    return "\n".join(lines)


def _acknowledged(result: Mapping[str, Any]) -> str:
    return (
        f"Acknowledged packet {result['packet_id']} at {local_time(result['acknowledged_at'])};"
        f" the signed receipt is in the ledger at position {result['ledger']['seq']}."
    )


def _directory(result: Mapping[str, Any]) -> str:
    lines = []
    members = sorted(result["members"], key=lambda m: (m["display_name"], m["id"]))
    for agency in result["agencies"]:
        lines.append(f"{agency['name']}  [{agency['kind']}]  {agency['id']}")
        for member in members:
            if member["agency"] == agency["id"]:
                keyless = "" if any(k["use"] == "encryption" for k in member["keys"]) else "  no current encryption key"
                lines.append(f"    {member['display_name']}  ({', '.join(member['roles'])})  {member['id']}{keyless}")
    return "\n".join(lines) or "The directory is empty."


def skipped_lines(result: Mapping[str, Any]) -> list[str]:
    """Lines naming the agency inbox members a packet or request was not sealed to, and why."""
    return [
        f"  not sent to {s['display_name']} ({s['member']}): no current encryption key (revoked or expired)"
        for s in result.get("skipped") or ()
    ]


def _member(result: Mapping[str, Any]) -> str:
    return (
        f"{result['display_name']}  {result['id']}\n  agency {result['agency']} ({result.get('agency_kind')})"
        f"\n  roles: {', '.join(result['roles'])}\n  keys: "
        + ", ".join(f"{k['key_id']} ({k['use']}{', revoked' if k.get('revoked_at') else ''})" for k in result["keys"])
    )


def _keys_new(result: Mapping[str, Any]) -> str:
    return (
        f"Wrote a new private key file {result['file']} (readable by you only; never share it).\n"
        f"  signing key    {result['signing_key_id']}\n  encryption key {result['encryption_key_id']}\n"
        f"Give your agency admin the enrolment file {result['enrolment_file']} (public: your two public keys,"
        " signed by you) for 'exchange members add --member-key'. Read them your signing key id to check it."
    )


def _init(result: Mapping[str, Any]) -> str:
    return (
        f"Created agency {result['agency']} and its admin {result['admin']}.\n"
        f"  admin key file: {result['admin_key_file']}\n  server public key: {result['server_public_key']}"
    )


def _agency_purposes(result: Mapping[str, Any]) -> str:
    def listed(codes: list[str] | None) -> str:
        return "any purpose its kind allows" if codes is None else (", ".join(codes) or "nothing")

    return (
        f"Agency {result['agency']} may now send: {listed(result['send_purposes'])}\n"
        f"  and receive: {listed(result['receive_purposes'])}"
    )


_PRINTERS: dict[str, Callable[[Any], str]] = {
    "agency_purposes": _agency_purposes,
    "inbox": _inbox,
    "outbox": _outbox,
    "sent": _sent,
    "opened": _opened,
    "acknowledged": _acknowledged,
    "directory": _directory,
    "member": _member,
    "member_added": _member,
    "keys_new": _keys_new,
    "init": _init,
}


def register_printer(kind: str, printer: Callable[[Any], str]) -> None:
    _PRINTERS[kind] = printer


def print_demo_banner(url: str, config: Config, demo_dir: Path, created: Sequence[Any] | None) -> None:
    """Tell a person how to talk to the freshly started demo server."""
    if created is None:
        print(f"Demo directory already seeded; member key files are in {demo_dir}", file=sys.stderr)
        return
    print("Seeded the demo directory. Member key files (private, 0600):", file=sys.stderr)
    for member in created:
        print(f"  {member.label:15} {', '.join(member.roles):32} {member.key_file}", file=sys.stderr)
    print(
        f"\nTry, in another terminal (after 'source .venv/bin/activate'):\n"
        f"  exchange whoami --key {demo_dir}/school-dsl.json\n"
        f"  exchange template referral_to_childrens_social_care > referral.json   # fill it in\n"
        f"  exchange send referral.json --key {demo_dir}/school-dsl.json\n"
        f"  exchange inbox --key {demo_dir}/csc-duty.json\n"
        f"Server key: {config.server_public_key_path}; database: {shown_database(config)};"
        f" record: {config.record_log_path}\n",
        file=sys.stderr,
    )


def shown_database(config: Config) -> str:
    """Where the store is, fit to print: a URL's password is never shown."""
    target = str(config.database_target)
    parts = urlsplit(target)
    if parts.password is None:
        return target
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))
