"""``exchange approvals``: a manager's queue of sharing without consent, and their signed decision."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from exchange import crypto
from exchange.cli import output
from exchange.client import ExchangeClient


def register(sub: Any) -> None:
    from exchange.cli.main import _client_options, with_client

    approvals = sub.add_parser("approvals", help="(managers) sharing without consent waiting for your decision")
    commands = approvals.add_subparsers(dest="approvals_command", required=True)
    p = commands.add_parser("list", help="packets of your agency awaiting (or owed) approval")
    _client_options(p)
    p.set_defaults(func=with_client(_list))
    p = commands.add_parser("show", help="the manifest of one queued packet (not its content)")
    _client_options(p)
    p.add_argument("packet_id")
    p.set_defaults(func=with_client(_show))
    for decision in ("approve", "refuse"):
        p = commands.add_parser(decision, help=f"{decision} sharing this packet without consent, signed by you")
        _client_options(p)
        p.add_argument("packet_id")
        p.add_argument("--reason-code", help="a short code for your reason, e.g. risk_outweighs_refusal")
        p.set_defaults(func=with_client(_decide), decision=decision)
    output.register_printer("approval_queue", _print_queue)
    output.register_printer("approval_item", _print_item)
    output.register_printer("approval_decision", _print_decision)


async def _list(client: ExchangeClient, args: argparse.Namespace) -> Any:
    result = await client.request("GET", "/v1/approvals")
    return {"kind": "approval_queue", "packets": result["packets"]}


async def _show(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "approval_item"} | await client.request("GET", f"/v1/approvals/{args.packet_id}")


async def _decide(client: ExchangeClient, args: argparse.Namespace) -> Any:
    item = await client.request("GET", f"/v1/approvals/{args.packet_id}")
    # Sign the digest we compute ourselves from the manifest we were shown, not the server's word for it.
    digest = crypto.manifest_digest(item["manifest"])
    decision = client.approval_for(args.packet_id, digest, args.decision)
    if args.reason_code:
        decision["reason_code"] = args.reason_code
    result = await client.request("POST", f"/v1/approvals/{args.packet_id}", decision)
    return {"kind": "approval_decision"} | result


def _print_queue(result: Mapping[str, Any]) -> str:
    packets = result["packets"]
    if not packets:
        return "Nothing is waiting for your approval."
    lines = [f"{len(packets)} packet(s) need a manager's decision:"]
    for item in packets:
        manifest = item["manifest"]
        reason = (manifest.get("without_consent") or {}).get("reason")
        lines.append(
            f"  {item['packet_id']}  {item['purpose']} ({item['urgency']})  [{item['state']}]"
            f"  from {item['from']['member']}  reason without consent: {reason}"
            + (f"  due {item['approval_due']}" if item.get("approval_due") else "")
        )
    return "\n".join(lines)


def _print_item(result: Mapping[str, Any]) -> str:
    manifest = result["manifest"]
    fields = ", ".join(f["name"] for f in manifest.get("fields", []))
    return "\n".join(
        [
            f"Packet {result['packet_id']} [{result['state']}] from {result['from']['member']}",
            f"  purpose {manifest['purpose']}, urgency {manifest['urgency']}",
            f"  consent: {(manifest.get('consent') or {}).get('status')}",
            f"  without consent because: {(manifest.get('without_consent') or {}).get('reason')}",
            f"  proportionality: {manifest.get('proportionality')}",
            f"  recipients: {', '.join(r['member'] for r in manifest['recipients'])}",
            f"  fields (values stay sealed): {fields}",
            f"  manifest digest {result['manifest_digest']}",
        ]
    )


def _print_decision(result: Mapping[str, Any]) -> str:
    return (
        f"You signed '{result['decision']}' for packet {result['packet_id']}: it is now {result['status']}"
        f" (ledger position {result['ledger']['seq']})."
    )
