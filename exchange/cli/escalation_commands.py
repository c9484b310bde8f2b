"""``exchange escalations``: what has fallen overdue that you wait for, owe or oversee; and acknowledging it.

``exchange escalations`` (or ``exchange escalations list``) lists them, ``--open`` only those
neither acknowledged nor resolved; ``exchange escalations ack ESC_ID`` records that you have taken
one in hand. Options may come before or after the words.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from exchange.cli import output
from exchange.client import ExchangeClient
from exchange.errors import InvalidRequest


def register(sub: Any) -> None:
    from exchange.cli.main import _client_options, with_client

    # One parser with optional words rather than subcommands, so that a bare "exchange escalations"
    # lists, and options such as --key work wherever they are written.
    p = sub.add_parser(
        "escalations",
        help="overdue acknowledgements, action reports, approvals and answers you wait for, owe or oversee",
        description="List escalations ('exchange escalations [list] [--open]') or acknowledge one"
        " ('exchange escalations ack ESC_ID').",
    )
    _client_options(p)
    p.add_argument("action", nargs="?", choices=("list", "ack"), default="list", help="list (default) or ack")
    p.add_argument("escalation_id", nargs="?", help="the escalation to acknowledge (with 'ack')")
    p.add_argument("--open", action="store_true", help="only those neither acknowledged nor resolved")
    p.add_argument("--all", action="store_true", help="follow next_cursor and list every page")
    p.set_defaults(func=with_client(_escalations))
    output.register_printer("escalations", _print_list)
    output.register_printer("escalation_acknowledged", _print_acknowledged)


async def _escalations(client: ExchangeClient, args: argparse.Namespace) -> Any:
    if args.action == "ack":
        if not args.escalation_id:
            raise InvalidRequest("Say which escalation to acknowledge: exchange escalations ack ESC_ID.")
        acknowledged = await client.acknowledge_escalation(args.escalation_id)
        # Wrapped: an escalation has a "kind" of its own (ack, action...).
        return {"kind": "escalation_acknowledged", "escalation": acknowledged}
    if args.escalation_id:
        raise InvalidRequest("'exchange escalations list' takes no escalation id; did you mean 'ack'?")
    state = "open" if args.open else None
    if args.all:
        found = await client.every("/v1/escalations", "escalations", state=state)
        return {"kind": "escalations", "open_only": args.open, "escalations": found, "next_cursor": None}
    page = await client.escalations(state=state)
    return {"kind": "escalations", "open_only": args.open} | page


def _who(party: Mapping[str, Any]) -> str:
    person = party.get("member_name") or party.get("member")
    place = party.get("agency_name") or party.get("agency")
    return f"{person} of {place}" if person and place else str(person or place or "-")


def _line(item: Mapping[str, Any]) -> list[str]:
    lines = [
        f"  {item['escalation_id']}  [{item['state']}]  overdue since {output.local_time(item['due'])}",
        f"      {item['overdue']}",
        f"      owed by {_who(item['owed_by'])} to {_who(item['owed_to'])}",
    ]
    if item.get("resolved_at"):
        late = "late, " if item.get("resolved_late") else ""
        lines.append(f"      resolved {late}at {output.local_time(item['resolved_at'])}")
    elif item.get("acknowledged_at"):
        lines.append(
            f"      acknowledged by {item['acknowledged_by']} at {output.local_time(item['acknowledged_at'])};"
            " still owed"
        )
    return lines


def _print_list(result: Mapping[str, Any]) -> str:
    items = result["escalations"]
    if not items:
        return "No open escalations." if result.get("open_only") else "No escalations."
    lines = [f"{len(items)} escalation(s):"]
    for item in items:
        lines.extend(_line(item))
    if result.get("next_cursor"):
        lines.append("  (more: run with --all to list every page)")
    return "\n".join(lines)


def _print_acknowledged(result: Mapping[str, Any]) -> str:
    item = result["escalation"]
    return "\n".join(
        [
            f"You acknowledged escalation {item['escalation_id']} (ledger position {item['ledger']['seq']}):",
            *_line(item)[1:],
        ]
    )
