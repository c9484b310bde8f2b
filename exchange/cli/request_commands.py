"""``exchange request | requests | decline | decide-not-to-share | decisions``: asking, declining, not sharing.

A request file is JSON like a packet file (``exchange template PURPOSE --request`` starts one):
what is asked of whom, for what purpose and under which basis; its ``details`` (who the child is,
why) are sealed to the holders. An answer is an ordinary packet whose ``in_reply_to`` names the
request (``exchange send``). A decline and a decision not to share are signed, their words sealed.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exchange.cli import output
from exchange.client import ExchangeClient
from exchange.errors import InvalidRequest
from exchange.policy.requests import REASONS


def register(sub: Any) -> None:
    from exchange.cli.main import _client_options, with_client

    p = sub.add_parser("request", help="ask another agency (or a member) for information, from a JSON request file")
    _client_options(p)
    p.add_argument("file", type=Path)
    p.set_defaults(func=with_client(_request))

    p = sub.add_parser("requests", help="requests you made or hold; with an id, open one (details, decline)")
    _client_options(p)
    p.add_argument("request_id", nargs="?", help="open this request: verify it and show what is sealed to you")
    p.add_argument("--role", choices=("sent", "received", "all"), help="only those you made, or hold")
    p.add_argument("--state", help="comma-separated: open, answered, declined")
    p.add_argument("--limit", type=int)
    p.add_argument("--cursor", help="the next_cursor of the previous page")
    p.set_defaults(func=with_client(_requests))

    p = sub.add_parser("decline", help="decline a request made to you, with reasons and an explanation")
    _client_options(p)
    p.add_argument("request_id")
    p.add_argument("--reason", required=True, help="comma-separated codes: " + ", ".join(REASONS))
    p.add_argument("--explanation", required=True, help="why, in words (sealed to the requester)")
    p.set_defaults(func=with_client(_decline))

    p = sub.add_parser(
        "decide-not-to-share", help="record a decision not to share (nothing is sent), from a file or options"
    )
    _client_options(p)
    p.add_argument("file", type=Path, nargs="?", help="JSON: purpose, fields_considered, reason_codes, reasons...")
    p.add_argument("--purpose")
    p.add_argument("--fields", help="comma-separated fields you considered sharing")
    p.add_argument("--reason", help="comma-separated codes: " + ", ".join(REASONS))
    p.add_argument("--reasons", help="your reasons in words (sealed to yourself)")
    p.add_argument("--subject-identifier", help="the child's identifier (only its pseudonym is sent)")
    p.add_argument("--request", dest="request_id", help="the request this decision is about, if any")
    p.set_defaults(func=with_client(_decide))

    p = sub.add_parser("decisions", help="your decisions not to share (--agency: your agency's, for managers)")
    _client_options(p)
    p.add_argument("--agency", action="store_true")
    p.add_argument("--cursor")
    p.set_defaults(func=with_client(_decisions))

    output.register_printer("request_sent", _print_sent)
    output.register_printer("requests", _print_requests)
    output.register_printer("request_opened", _print_opened)
    output.register_printer("request_declined", _print_declined)
    output.register_printer("decision_recorded", _print_decision)
    output.register_printer("decisions", _print_decisions)


def _codes(text: str | None) -> list[str]:
    return [code.strip() for code in (text or "").split(",") if code.strip()]


async def _request(client: ExchangeClient, args: argparse.Namespace) -> Any:
    from exchange.cli.main import _load_json

    return {"kind": "request_sent"} | await client.request_information(_load_json(args.file))


async def _requests(client: ExchangeClient, args: argparse.Namespace) -> Any:
    if args.request_id:
        opened = await client.open_request(args.request_id)
        return {
            "kind": "request_opened",
            "verified": True,
            "details": opened.details,
            "explanation": opened.explanation,
        } | {k: v for k, v in opened.fetched.items() if k not in ("sealed_details",)}
    page = await client.requests(args.role, args.state, limit=args.limit, cursor=args.cursor)
    return {"kind": "requests"} | page


async def _decline(client: ExchangeClient, args: argparse.Namespace) -> Any:
    result = await client.decline(args.request_id, _codes(args.reason), args.explanation)
    return {"kind": "request_declined"} | result


async def _decide(client: ExchangeClient, args: argparse.Namespace) -> Any:
    from exchange.cli.main import _load_json

    document: dict[str, Any] = dict(_load_json(args.file)) if args.file else {}
    given = {
        "purpose": args.purpose,
        "fields_considered": _codes(args.fields) or None,
        "reason_codes": _codes(args.reason) or None,
        "reasons": args.reasons,
        "subject_identifier": args.subject_identifier,
        "request_id": args.request_id,
    }
    document.update({k: v for k, v in given.items() if v is not None})
    missing = [k for k in ("purpose", "fields_considered", "reason_codes", "reasons") if not document.get(k)]
    if missing:
        raise InvalidRequest(
            f"Say {', '.join(missing)} (in the file, or as --purpose, --fields, --reason and --reasons)."
        )
    unknown = set(document) - set(given)
    if unknown:
        raise InvalidRequest(f"The decision file has keys the exchange does not know: {', '.join(sorted(unknown))}.")
    result = await client.decide_not_to_share(
        purpose=str(document["purpose"]),
        fields_considered=list(document["fields_considered"]),
        reason_codes=list(document["reason_codes"]),
        reasons=str(document["reasons"]),
        subject_identifier=document.get("subject_identifier"),
        request_id=document.get("request_id"),
    )
    return {"kind": "decision_recorded"} | result


async def _decisions(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "decisions"} | await client.decisions("agency" if args.agency else None, cursor=args.cursor)


# ---------------------------------------------------------------------------- human output


def _reasons(codes: list[str]) -> str:
    return "; ".join(f"{code} ({REASONS.get(code, '?')})" for code in codes)


def _print_sent(result: Mapping[str, Any]) -> str:
    holders = result["holders"]
    lines = [
        f"Request {result['request_id']} was checked against the rules and sent to {len(holders)} member(s)"
        f" of agency {result['holder']['agency']}: {', '.join(holders)}.",
        "  the child's details are sealed to them; the server holds only codes and ids.",
    ]
    if result.get("answer_due"):
        due = output.local_time(result["answer_due"])
        lines.append(f"  an answer (a packet, or a decline with reasons) is due by {due}")
    lines.append(f"  recorded in the ledger at position {result['ledger']['seq']}")
    lines.extend(output.skipped_lines(result))
    return "\n".join(lines)


def _print_requests(result: Mapping[str, Any]) -> str:
    items = result["requests"]
    if not items:
        return "No requests."
    lines = [f"{len(items)} request(s):"]
    for r in items:
        asker = f"from {r['from']['member']} ({r['from']['agency']})"
        who = f"to {r['holder']['agency']}" if r["role"] == "sent" else asker
        lines.append(f"  {r['request_id']}  {r['purpose']} ({r['urgency']})  {who}  [{r['state']}]")
        lines.append(f"      fields: {', '.join(r['fields'])}; made {output.local_time(r['created'])}")
        if r["state"] == "open" and r.get("answer_due"):
            lines.append(f"      answer due by {output.local_time(r['answer_due'])}")
        if r.get("answered_by"):
            lines.append(f"      answered by packet {r['answered_by']}")
        if r.get("declined"):
            lines.append(f"      declined by {r['declined']['declined_by']}: {_reasons(r['declined']['reason_codes'])}")
    if result.get("next_cursor"):
        lines.append(f"More: --cursor {result['next_cursor']}")
    return "\n".join(lines)


def _print_opened(result: Mapping[str, Any]) -> str:
    lines = [
        f"Request {result['request_id']} [{result['state']}]: the requester's signature verified.",
        f"  from {result['from']['member']} ({result['from']['agency']}) to agency {result['holder']['agency']}",
        f"  purpose {result['purpose']}, urgency {result['urgency']}; fields asked: {', '.join(result['fields'])}",
        f"  lawful basis: {json.dumps(result['lawful_basis'])}",
    ]
    if result.get("details") is not None:
        lines.append("  details (sealed to you):")
        lines += [f"    {name}: {value}" for name, value in result["details"].items()]
    if result.get("answered_by"):
        lines.append(f"  answered by packet {result['answered_by']} at {output.local_time(result['answered_at'])}")
    declined = result.get("declined")
    if declined:
        lines.append(f"  declined by {declined['declined_by']} at {output.local_time(declined['declined_at'])}")
        lines.append(f"    reasons: {_reasons(declined['reason_codes'])}")
        if result.get("explanation") is not None:
            lines.append(f"    explanation (sealed to you): {result['explanation']}")
    if result["state"] == "open" and result.get("role") == "received":
        lines.append(
            "  Answer with `exchange send FILE` (in_reply_to: this id), or `exchange decline ID --reason ...`."
        )
    return "\n".join(lines)


def _print_declined(result: Mapping[str, Any]) -> str:
    return (
        f"You declined request {result['request_id']} ({_reasons(result['reason_codes'])}); the requester can read"
        f" your explanation. Recorded in the ledger at position {result['ledger']['seq']}."
    )


def _print_decision(result: Mapping[str, Any]) -> str:
    return (
        f"Recorded your decision not to share ({result['decision_id']}); nothing was sent to anyone."
        f" Your reasons are sealed to you. Ledger position {result['ledger']['seq']}."
    )


def _print_decisions(result: Mapping[str, Any]) -> str:
    items = result["decisions"]
    if not items:
        return "No decisions not to share are recorded."
    lines = [f"{len(items)} decision(s) not to share:"]
    for d in items:
        lines.append(f"  {d['decision_id']}  {d['purpose']}  by {d['member']}  {output.local_time(d['created'])}")
        lines.append(f"      considered: {', '.join(d['fields_considered'])}; reasons: {_reasons(d['reason_codes'])}")
        if d.get("request_id"):
            lines.append(f"      about request {d['request_id']}")
        if d.get("reasons_in_words"):
            lines.append(f"      in your words: {d['reasons_in_words']}")
    return "\n".join(lines)
