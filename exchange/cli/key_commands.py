"""``exchange keys monitor`` (a member checks the ledger's record of their keys) and ``exchange operator``."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exchange import bootstrap
from exchange.cli import output
from exchange.client import ExchangeClient
from exchange.errors import KeyTransparencyError
from exchange.keyfile import load_enrolment


def register(sub: Any, keys: Any) -> None:
    from exchange.cli.main import _client_options, _server_options, with_client

    p = keys.add_parser(
        "monitor", help="check that the signed ledger holds no key for you that you did not make (key transparency)"
    )
    _client_options(p)
    p.set_defaults(func=with_client(_monitor))

    operator = sub.add_parser("operator", help="(operator, on the server) grant roles beyond one agency")
    commands = operator.add_subparsers(dest="operator_command", required=True)
    p = commands.add_parser("register", help="register a member with any role, auditor included, from their enrolment")
    _server_options(p)
    p.add_argument("--agency", required=True, help="the agency id the member belongs to")
    p.add_argument("--name", required=True)
    p.add_argument("--roles", required=True, help="comma-separated, e.g. auditor")
    p.add_argument("--enrolment", type=Path, required=True, help="the member's enrolment file (from 'keys new')")
    p.set_defaults(func=_operator_register)
    output.register_printer("keys_monitor", _print_monitor)
    output.register_printer("operator_registered", _print_registered)


async def _monitor(client: ExchangeClient, args: argparse.Namespace) -> Any:
    """Every key the ledger holds for this member must be one their key file knows, and theirs must be there."""
    history = await client.key_history(client.member_id)
    credentials = client.credentials
    mine = {credentials.signing.key_id, credentials.encryption.key_id}
    known = mine | {r.key.key_id for r in credentials.previous_signing} | {
        r.key.key_id for r in credentials.previous_encryption
    }
    strangers = [k for k in history.keys.values() if k.key_id not in known and not k.revoked]
    absent = sorted(k for k in mine if k not in history.keys)
    revoked = sorted(k for k in mine if k in history.keys and history.keys[k].revoked)
    if strangers:
        listed = "; ".join(
            f"{k.use} key {k.key_id} added {k.added_time} by {k.added_by or 'the operator'}" for k in strangers
        )
        raise KeyTransparencyError(
            f"The ledger holds keys for you that your key file does not know: {listed}. Senders may be sealing to"
            " them. Revoke them now ('exchange keys revoke KEY_ID') and tell your agency's admin and the"
            " exchange's operator.",
            extras={"unknown_keys": [k.key_id for k in strangers]},
        )
    if absent:
        raise KeyTransparencyError(
            f"Your current keys {', '.join(absent)} are not in the signed ledger (yet?): run this again in a minute;"
            " if they are still missing, the server is not showing senders your real keys. Tell the operator.",
            extras={"missing_keys": absent},
        )
    return {
        "kind": "keys_monitor",
        "member": client.member_id,
        "ledger_size": history.head.size,
        "head_root": history.head.root_hash.hex(),
        "server_key": client.trust.server_key.hex() if client.trust.server_key else None,
        "keys": [
            {
                "key_id": k.key_id,
                "use": k.use,
                "added_seq": k.added_seq,
                "added_time": k.added_time,
                "added_by": k.added_by,
                "revoked_time": k.revoked_time,
                "yours": k.key_id in known,
            }
            for k in sorted(history.keys.values(), key=lambda k: k.added_seq)
        ],
        "current_revoked": revoked,
        "pending": history.pending,
    }


def _print_monitor(result: Mapping[str, Any]) -> str:
    lines = [
        f"Every key the signed ledger holds for you is one you made ({len(result['keys'])} key events checked"
        f" against a signed head of {result['ledger_size']} entries, consistent with the last one you saw)."
    ]
    for key in result["keys"]:
        state = f"revoked {output.local_time(key['revoked_time'])}" if key["revoked_time"] else "current"
        if not key["yours"]:
            # Only a revoked stranger gets this far: what was sealed to it before then may have been read.
            state += f"; NOT YOURS, added by {key['added_by'] or 'the operator'}: tell your admin what was sent before"
        lines.append(f"  {key['use']:<10} {key['key_id']}  added {output.local_time(key['added_time'])}  {state}")
    if result["current_revoked"]:
        lines.append(f"Your key file's current keys {', '.join(result['current_revoked'])} are revoked: rotate them.")
    if result["pending"]:
        lines.append(f"{result['pending']} newer key event(s) are not in a signed head yet: check again in a minute.")
    return "\n".join(lines)


def _operator_register(args: argparse.Namespace) -> int:
    from exchange.cli.main import config_from

    created = asyncio.run(
        bootstrap.operator_register(
            config_from(args),
            agency_id=args.agency,
            display_name=args.name,
            roles=[r.strip() for r in args.roles.split(",") if r.strip()],
            enrolment=load_enrolment(args.enrolment),
        )
    )
    return output.emit(args, {"kind": "operator_registered"} | created)


def _print_registered(result: Mapping[str, Any]) -> str:
    return (
        f"Registered {result['display_name']} ({result['id']}) in agency {result['agency']} with roles"
        f" {', '.join(result['roles'])}. Their key file learns its member id on first use."
    )
