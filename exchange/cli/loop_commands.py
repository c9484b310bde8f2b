"""``exchange report / confirm / query / loop / reply / actions``: closing the loop on a packet.

The recipient says what they did or will do (``report``); the sender ``confirm``s it (the loop is
closed) or ``query``s it, and the recipient answers with another report. ``reply`` is the
adviser's answer to an anonymous consultation. Narratives and questions are sealed on this
machine to the member they are for; ``loop`` verifies every signed statement before showing it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from exchange import feedback
from exchange.cli import output
from exchange.client import ExchangeClient
from exchange.policy import vocabulary


def register(sub: Any) -> None:
    from exchange.cli.main import _client_options, _common, with_client

    p = sub.add_parser("actions", help="the action codes a report may carry, in plain words")
    _common(p)
    p.add_argument("--kind", help="only the codes for this kind of packet (e.g. referral, consultation)")
    p.set_defaults(func=_actions)

    p = sub.add_parser("report", help="(recipient) report what you did or will do about a packet, signed")
    _client_options(p)
    p.add_argument("packet_id")
    p.add_argument("--action", required=True, help="an action code (see 'exchange actions')")
    p.add_argument("--narrative", help="what happened or will happen, sealed to the sender (needed for 'other')")
    p.set_defaults(func=with_client(_report))

    p = sub.add_parser("confirm", help="(sender) confirm a recipient's action report: their loop is closed")
    _client_options(p)
    p.add_argument("packet_id")
    p.add_argument("--recipient", required=True, help="the member whose report you confirm")
    p.set_defaults(func=with_client(_confirm))

    p = sub.add_parser("query", help="(sender) query a recipient's action report; they must answer")
    _client_options(p)
    p.add_argument("packet_id")
    p.add_argument("--recipient", required=True, help="the member whose report you query")
    p.add_argument("--question", required=True, help="your question, sealed to the recipient")
    p.set_defaults(func=with_client(_query))

    p = sub.add_parser("loop", help="a packet's feedback loop: reports, confirmations and queries, verified")
    _client_options(p)
    p.add_argument("packet_id")
    p.set_defaults(func=with_client(_loop))

    p = sub.add_parser("reply", help="(adviser) answer an anonymous consultation with your advice")
    _client_options(p)
    p.add_argument("packet_id")
    p.add_argument("--advice", required=True, help="your advice, sealed to the practitioner who asked")
    p.set_defaults(func=with_client(_reply))

    output.register_printer("actions", _print_actions)
    output.register_printer("reported", _print_reported)
    output.register_printer("reviewed", _print_reviewed)
    output.register_printer("loop", _print_loop)


def action_list(kind: str | None) -> list[dict[str, Any]]:
    """The vocabulary as ``exchange actions`` shows it: each code with its words and what it needs."""
    codes = feedback.actions_for(kind) if kind else list(vocabulary.ACTIONS)
    return [
        {
            "code": code,
            "title": vocabulary.ACTIONS[code],
            "needs_narrative": code in vocabulary.ACTIONS_NEEDING_NARRATIVE,
            "consultation": code in vocabulary.CONSULTATION_ACTIONS,
            "consultation_only": code in vocabulary.CONSULTATION_ONLY_ACTIONS,
        }
        for code in codes
    ]


def _actions(args: argparse.Namespace) -> int:
    return output.emit(args, {"kind": "actions", "for_kind": args.kind, "actions": action_list(args.kind)})


async def _report(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "reported"} | await client.report(args.packet_id, args.action, args.narrative)


async def _confirm(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "reviewed"} | await client.confirm(args.packet_id, args.recipient)


async def _query(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "reviewed"} | await client.query(args.packet_id, args.recipient, args.question)


async def _loop(client: ExchangeClient, args: argparse.Namespace) -> Any:
    verified = await client.loop(args.packet_id)
    return {"kind": "loop", "me": client.member_id} | verified.as_json()


async def _reply(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "reported"} | await client.reply(args.packet_id, args.advice)


# ------------------------------------------------------------------------------ human output


def _print_actions(result: Mapping[str, Any]) -> str:
    head = f"Action codes for a {result['for_kind']} packet:" if result.get("for_kind") else "Action codes:"
    lines = [head]
    for action in result["actions"]:
        notes = []
        if action["needs_narrative"]:
            notes.append("needs a narrative")
        if action["consultation_only"]:
            notes.append("consultations only")
        elif not action["consultation"]:
            notes.append("not for consultations")
        lines.append(f"  {action['code']:34} {action['title']}" + (f"  ({'; '.join(notes)})" if notes else ""))
    lines.append("Report one with: exchange report PACKET --action CODE [--narrative TEXT]")
    return "\n".join(lines)


def _print_reported(result: Mapping[str, Any]) -> str:
    lines = []
    if result.get("acknowledged"):
        lines.append(f"Acknowledged consultation {result['packet_id']} first.")
    words = vocabulary.describe(vocabulary.ACTIONS, result["action"])
    answering = " in answer to the sender's query" if result.get("answers") else ""
    lines.append(f"Reported '{result['action']}' ({words}) on packet {result['packet_id']}{answering}.")
    lines.append(f"  now: {result['loop']}")
    lines.append(f"  statement {result['statement_id']}; in the ledger at position {result['ledger']['seq']}")
    return "\n".join(lines)


def _print_reviewed(result: Mapping[str, Any]) -> str:
    if result["decision"] == "confirm":
        head = f"Confirmed {result['recipient']}'s action report on packet {result['packet_id']}: the loop is closed."
    else:
        head = f"Queried {result['recipient']}'s action report on packet {result['packet_id']}; they must answer"
        head += f" by {output.local_time(result['answer_due'])}." if result.get("answer_due") else "."
    return (
        f"{head}\n  statement {result['statement_id']}; in the ledger at position {result['ledger']['seq']}"
    )


def _note_line(statement: Mapping[str, Any]) -> str | None:
    note = statement.get("note")
    if note is not None:
        text = note.get("narrative") or note.get("question") or ""
        return f"        {'question' if statement['step'] == 'query' else 'narrative'}: {text}"
    if statement.get("note_removed"):
        return "        (its note was deleted at the end of retention)"
    if statement.get("note_sealed"):
        return f"        (a note sealed to {statement['note_for']}, not to you)"
    return None


def _print_loop(result: Mapping[str, Any]) -> str:
    lines = [
        f"Packet {result['packet_id']} ({result['packet_kind']}) from {result['sender']}:"
        " every statement below was verified on this machine."
    ]
    if not result["recipients"]:
        lines.append("  It has no recipients yet.")
    for entry in result["recipients"]:
        action = f"; latest action: {entry['latest_action']}" if entry.get("latest_action") else ""
        lines.append(f"  to {entry['member']}: {entry['loop']}{action}")
        for statement in entry["statements"]:
            what = {
                "report": f"reported {statement['action']} ({statement['action_words']})",
                "query": "queried the report",
                "confirm": "confirmed the report",
            }[statement["step"]]
            lines.append(f"      {output.local_time(statement['created'])}  {statement['author']} {what}")
            note = _note_line(statement)
            if note:
                lines.append(note)
    return "\n".join(lines)
