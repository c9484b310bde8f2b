"""The ``exchange`` command: run a server, manage members and keys, send and receive packets.

Human-readable output by default; ``--json`` on every command for machines. Errors are printed
as one plain sentence (and the rule list for refused packets), never as a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from exchange import bootstrap
from exchange.cli import output
from exchange.client import ApiError, ExchangeClient
from exchange.config import Config
from exchange.democlock import FileOffsetClock
from exchange.domain import utc_now
from exchange.errors import ExchangeError, InvalidRequest
from exchange.keyfile import MemberCredentials, is_key_file, load_enrolment
from exchange.store import engine_of
from exchange.transparency import TrustState

DEFAULT_SERVER = "http://127.0.0.1:8080"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def _client_options(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument(
        "--key",
        type=Path,
        default=Path(os.environ["EXCHANGE_KEY_FILE"]) if os.environ.get("EXCHANGE_KEY_FILE") else None,
        help="your member key file (default: $EXCHANGE_KEY_FILE)",
    )
    parser.add_argument("--server", help="server URL (default: the one in your key file, else %(default)s)")
    parser.add_argument("--ca", type=Path, help="CA certificate (PEM) to trust for the server's TLS certificate")
    parser.add_argument(
        "--linkage-key", type=Path, help="deployment linkage key used to pseudonymise subject identifiers"
    )


def _listing_options(parser: argparse.ArgumentParser, states: str) -> None:
    """Every listing: a page at a time, filtered by state; nothing is cut off without saying so."""
    parser.add_argument("--state", help=f"only these states, comma-separated ({states})")
    parser.add_argument("--limit", type=int, help="how many per page (default 100)")
    parser.add_argument("--cursor", help="continue where the last page stopped")


def _identifier_override(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-identifiers",
        metavar="REASON",
        choices=["not_identifying_in_context", "adviser_needs_it", "other"],
        help="send a consultation although the local check found identifiers (the reason is recorded)",
    )


def _server_options(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    parser.add_argument("--data-dir", type=Path, default=Path("var"), help="database and record log folder")
    parser.add_argument(
        "--database",
        metavar="URL",
        default=os.environ.get("EXCHANGE_DATABASE_URL") or None,
        help="the store: a postgresql:// URL (several instances may share it), sqlite:PATH or a file"
        " (default: $EXCHANGE_DATABASE_URL, else DATA_DIR/exchange.sqlite)",
    )
    parser.add_argument("--keys-dir", type=Path, default=Path("keys"), help="where the server key lives")
    parser.add_argument("--record-log", type=Path, help="record log file (JSON lines)")


def build_parser() -> argparse.ArgumentParser:
    from exchange.cli import (
        approval_commands,
        escalation_commands,
        key_commands,
        ledger_commands,
        loop_commands,
        policy_commands,
        recall_commands,
        request_commands,
    )

    parser = argparse.ArgumentParser(
        prog="exchange",
        description="Safeguarding Exchange: share information about children at risk, safely.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("init", help="create the server key, the first agency and its admin")
    _server_options(p)
    p.add_argument("--agency-name", required=True)
    p.add_argument("--agency-kind", required=True, help="e.g. children_social_care, police, health, education")
    p.add_argument("--admin-name", required=True)
    p.add_argument("--admin-key-file", type=Path, required=True, help="where to write the admin's key file")
    p.add_argument("--server-url", default=DEFAULT_SERVER)
    p.set_defaults(func=_init)

    agencies = sub.add_parser("agencies", help="(operator) agencies in the directory")
    agency_commands = agencies.add_subparsers(dest="agencies_command", required=True)
    p = agency_commands.add_parser("purposes", help="set which purposes an agency may send and receive")
    _server_options(p)
    p.add_argument("agency_id")
    p.add_argument("--send", help="comma-separated purpose codes; '' for none; omit to leave no list")
    p.add_argument("--receive", help="comma-separated purpose codes; '' for none; omit to leave no list")
    p.set_defaults(func=_agency_purposes)

    p = sub.add_parser("serve", help="run the exchange server")
    _server_options(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--tls-cert", type=Path, help="TLS certificate chain (PEM)")
    p.add_argument("--tls-key", type=Path, help="TLS private key (PEM)")
    p.add_argument(
        "--max-concurrent-requests",
        type=int,
        default=Config.max_concurrent_requests,
        help="requests handled at once before 503 server.busy (default: %(default)s)",
    )
    p.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=Config.rate_limit_per_minute,
        help="signed requests per member per minute before 429 (default: %(default)s)",
    )
    p.add_argument("--seed-demo", action="store_true", help="on first run, create the demo directory")
    p.add_argument("--demo-keys-dir", type=Path, help="where demo members' key files go (default: KEYS/demo)")
    p.add_argument(
        "--demo-clock",
        type=Path,
        metavar="FILE",
        help="(demonstrations only, with --seed-demo) move the server's clock by the seconds written in FILE",
    )
    p.add_argument(
        "--deadline-check-seconds",
        type=float,
        default=Config.deadline_check_seconds,
        help="how often overdue work is looked for (default: %(default)s)",
    )
    p.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="member keys").add_subparsers(dest="keys_command", required=True)
    p = keys.add_parser(
        "new", help="generate your key file (private, 0600) and the enrolment file your admin registers you with"
    )
    _common(p)
    p.add_argument("file", type=Path)
    p.add_argument(
        "--enrolment", type=Path, help="where to write the public enrolment file (default: FILE.enrolment.json)"
    )
    p.set_defaults(func=_keys_new)
    p = keys.add_parser("rotate", help="generate new keys for yourself, register them and revoke the old ones")
    _client_options(p)
    p.add_argument(
        "--keep-old",
        action="store_true",
        help="leave the old keys valid on the server (revoke them later with 'keys revoke')",
    )
    p.set_defaults(func=_keys_rotate)
    p = keys.add_parser("revoke", help="revoke one of your keys (or, as admin, a member's)")
    _client_options(p)
    p.add_argument("key_id")
    p.set_defaults(func=_keys_revoke)

    members = sub.add_parser("members", help="the directory").add_subparsers(dest="members_command", required=True)
    p = members.add_parser("add", help="(agency admin) register a member of your agency from their enrolment file")
    _client_options(p)
    p.add_argument("--name", required=True)
    p.add_argument("--roles", required=True, help="comma-separated: practitioner,manager,safeguarding_lead,...")
    p.add_argument(
        "--member-key",
        type=Path,
        required=True,
        help="the new member's enrolment file (public, from their 'keys new'), or their key file",
    )
    p.set_defaults(func=_members_add)
    p = members.add_parser("list", help="agencies and members in the directory")
    _client_options(p)
    p.add_argument("--agency", help="only this agency's members (agy_...)")
    p.set_defaults(func=_members_list)

    p = sub.add_parser("whoami", help="who your key file says you are")
    _client_options(p)
    p.set_defaults(func=_whoami)

    p = sub.add_parser("send", help="seal and send a packet described in a JSON packet file")
    _client_options(p)
    p.add_argument("file", type=Path)
    p.add_argument("--approval-from", type=Path, help="a manager's key file, to attach their approval at submission")
    _identifier_override(p)
    p.set_defaults(func=_send)

    p = sub.add_parser(
        "consult",
        help="ask for advice without identifying the family (an anonymous consultation packet file)",
        description="Seal and send an anonymous consultation. Its free text is checked on your machine first:"
        " an NHS number, a postcode, a full date of birth or a name from case_names is refused before anything"
        " is sent, unless you override it with a reason (which is recorded).",
    )
    _client_options(p)
    p.add_argument("file", type=Path)
    _identifier_override(p)
    p.set_defaults(func=_consult)

    p = sub.add_parser("inbox", help="packets delivered to you")
    _client_options(p)
    _listing_options(p, "e.g. delivered,opened for what is not yet acknowledged")
    p.set_defaults(func=_inbox)

    p = sub.add_parser("open", help="fetch, verify, decrypt and print a packet")
    _client_options(p)
    p.add_argument("packet_id")
    p.set_defaults(func=_open)

    p = sub.add_parser("ack", help="acknowledge a packet with a signed receipt")
    _client_options(p)
    p.add_argument("packet_id")
    p.set_defaults(func=_ack)

    p = sub.add_parser("outbox", help="packets you sent, with each recipient's progress")
    _client_options(p)
    _listing_options(p, "e.g. delivered, awaiting_approval, recalled")
    p.set_defaults(func=_outbox)

    policy_commands.register(sub)
    approval_commands.register(sub)
    ledger_commands.register(sub)
    escalation_commands.register(sub)
    loop_commands.register(sub)
    recall_commands.register(sub)
    request_commands.register(sub)
    key_commands.register(sub, keys)
    return parser


# ---------------------------------------------------------------------------- helpers


def config_from(args: argparse.Namespace, **overrides: Any) -> Config:
    database = getattr(args, "database", None)
    if database:
        engine_of(database)  # a URL of an unknown scheme is refused here, before anything starts
    return Config(
        data_dir=args.data_dir.resolve(),
        keys_dir=args.keys_dir.resolve(),
        record_log=args.record_log.resolve() if args.record_log else None,
        database=database,
        **overrides,
    )


def credentials_from(args: argparse.Namespace) -> MemberCredentials:
    if args.key is None:
        raise InvalidRequest("Say which key file to use: --key FILE (or set EXCHANGE_KEY_FILE).")
    return MemberCredentials.load(args.key)


def client_from(args: argparse.Namespace, credentials: MemberCredentials | None = None) -> ExchangeClient:
    credentials = credentials or credentials_from(args)
    server = args.server or credentials.server or DEFAULT_SERVER
    context = ssl.create_default_context(cafile=str(args.ca)) if args.ca else None
    linkage_path = args.linkage_key
    if linkage_path is None and args.key is not None and (args.key.parent / "linkage.key").exists():
        linkage_path = args.key.parent / "linkage.key"
    linkage = bytes.fromhex(linkage_path.read_text().strip()) if linkage_path else None
    # What this key file's client verified of the ledger before (key transparency), kept beside it.
    trust = TrustState.load(trust_path(args.key)) if args.key is not None else None
    return ExchangeClient(server, credentials, ssl_context=context, linkage_key=linkage, trust=trust)


def trust_path(key_file: Path) -> Path:
    """Where a key file's trust state lives: beside it, ``NAME.trust.json``."""
    return key_file.with_name(key_file.stem + ".trust.json")


def with_client(
    work: Callable[[ExchangeClient, argparse.Namespace], Awaitable[Any]],
) -> Callable[[argparse.Namespace], int]:
    """Run ``work`` with a connected client and print its result (JSON or words)."""

    def run(args: argparse.Namespace) -> int:
        async def go() -> Any:
            async with client_from(args) as client:
                if client.credentials.member_id is None and args.key is not None:
                    client = await _learn_registration(client, args.key)
                return await work(client, args)

        result = asyncio.run(go())
        return output.emit(args, result)

    return run


async def _learn_registration(client: ExchangeClient, key_file: Path) -> ExchangeClient:
    """A key file made by 'keys new' learns its member id and agency on first use after registration.

    The admin registered the member from their public enrolment file, never holding the private
    key file; the server knows the member by the key that signed this request.
    """
    me = await client.me()
    credentials = client.credentials.registered(me["id"], me["agency"], client.base_url, me["display_name"])
    credentials.save(key_file)
    client.credentials = credentials
    return client


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InvalidRequest(f"There is no file {path}.") from None
    except ValueError as exc:
        raise InvalidRequest(f"{path} is not valid JSON: {exc}") from None


# ---------------------------------------------------------------------------- server commands


def _init(args: argparse.Namespace) -> int:
    config = config_from(args)
    created = asyncio.run(
        bootstrap.init(
            config,
            agency_name=args.agency_name,
            agency_kind=args.agency_kind,
            admin_name=args.admin_name,
            key_file=args.admin_key_file,
            server=args.server_url,
        )
    )
    return output.emit(
        args,
        {
            "kind": "init",
            "server_public_key": str(config.server_public_key_path),
            "admin": created.member_id,
            "agency": created.agency_id,
            "admin_key_file": str(created.key_file),
        },
    )


def _codes(text: str | None) -> list[str] | None:
    return None if text is None else [c.strip() for c in text.split(",") if c.strip()]


def _agency_purposes(args: argparse.Namespace) -> int:
    result = asyncio.run(
        bootstrap.set_agency_purposes(config_from(args), args.agency_id, _codes(args.send), _codes(args.receive))
    )
    return output.emit(args, {"kind": "agency_purposes"} | result)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from exchange.web.app import build_app

    if bool(args.tls_cert) != bool(args.tls_key):
        raise InvalidRequest("Give both --tls-cert and --tls-key, or neither.")
    if not args.tls_cert and not _is_loopback(args.host):
        raise InvalidRequest("Refusing to serve plain HTTP on a non-loopback address: give --tls-cert and --tls-key.")
    if args.max_concurrent_requests < 1:
        raise InvalidRequest("--max-concurrent-requests must be at least 1.")
    if args.demo_clock is not None and not args.seed_demo:
        raise InvalidRequest("--demo-clock is for demonstrations only: it needs --seed-demo.")
    if args.deadline_check_seconds <= 0:
        raise InvalidRequest("--deadline-check-seconds must be more than 0.")
    if args.rate_limit_per_minute < 1:
        raise InvalidRequest("--rate-limit-per-minute must be at least 1.")
    config = config_from(
        args,
        host=args.host,
        port=args.port,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        max_concurrent_requests=args.max_concurrent_requests,
        deadline_check_seconds=args.deadline_check_seconds,
        rate_limit_per_minute=args.rate_limit_per_minute,
    )
    scheme = "https" if config.uses_tls else "http"
    url = f"{scheme}://{args.host}:{args.port}"
    config.data_dir.mkdir(parents=True, exist_ok=True)
    bootstrap.ensure_server_key(config)
    if args.seed_demo:
        demo_dir = (args.demo_keys_dir or args.keys_dir / "demo").resolve()
        created = asyncio.run(bootstrap.seed_demo(config, key_dir=demo_dir, server=url))
        output.print_demo_banner(url, config, demo_dir, created)
    context = None
    if config.uses_tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    print(f"Safeguarding Exchange listening on {url}  (Ctrl-C to stop)", file=sys.stderr)
    clock = FileOffsetClock(args.demo_clock.resolve()) if args.demo_clock is not None else utc_now
    web.run_app(
        build_app(config, clock=clock),
        host=args.host,
        port=args.port,
        ssl_context=context,
        keepalive_timeout=config.keepalive_seconds,
        print=None,
    )
    return 0


# ---------------------------------------------------------------------------- member commands


def enrolment_path(key_file: Path) -> Path:
    """Where 'keys new' puts the public enrolment file for a key file: beside it, ``NAME.enrolment.json``."""
    return key_file.with_name(key_file.stem + ".enrolment.json")


def _keys_new(args: argparse.Namespace) -> int:
    enrolment_file = args.enrolment or enrolment_path(args.file)
    for path in (args.file, enrolment_file):
        if path.exists():
            raise InvalidRequest(f"{path} already exists; choose another file name.")
    credentials = MemberCredentials.generate()
    credentials.save(args.file)
    enrolment = credentials.enrolment()
    enrolment_file.write_text(json.dumps(enrolment, indent=2) + "\n", encoding="utf-8")
    return output.emit(
        args,
        {
            "kind": "keys_new",
            "file": str(args.file),
            "enrolment_file": str(enrolment_file),
            "signing_key_id": credentials.signing.key_id,
            "encryption_key_id": credentials.encryption.key_id,
        }
        | credentials.public_document(),
    )


async def _keys_rotate_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    fresh = MemberCredentials.generate()
    old = client.credentials
    signing = await client.add_signing_key(fresh.signing)
    encryption = await client.add_encryption_key(fresh.encryption.public_bytes)
    # The replaced keys stay in the file's history, since packets sealed to them must still open. The
    # file is saved before anything is revoked, so a failure below never leaves the member keyless.
    rotated = old.rotated(fresh.signing, fresh.encryption, retired=utc_now())
    rotated.save(args.key)
    revoked: list[str] = []
    if not args.keep_old:
        # A rotated-away key must not stay valid indefinitely (a lost laptop's key would still sign):
        # revoke both old keys, signing the revocations with the new key.
        async with ExchangeClient(client.base_url, rotated, ssl_context=client.ssl_context) as renewed:
            for key_id in (old.signing.key_id, old.encryption.key_id):
                await renewed.revoke_key(key_id)
                revoked.append(key_id)
    return {
        "kind": "keys_rotate",
        "signing": signing,
        "encryption": encryption,
        "retired": {"signing": old.signing.key_id, "encryption": old.encryption.key_id},
        "revoked": revoked,
        "previous_keys": str(args.key),
    }


_keys_rotate = with_client(_keys_rotate_work)


async def _keys_revoke_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "keys_revoke"} | await client.revoke_key(args.key_id)


_keys_revoke = with_client(_keys_revoke_work)


async def _members_add_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    me = await client.me()
    roles = [r.strip() for r in args.roles.split(",") if r.strip()]
    if is_key_file(args.member_key):
        # Kept for set-ups where the admin prepares a newcomer's key file for them; the enrolment file
        # is better, since then the admin never holds the member's private keys.
        new_member = MemberCredentials.load(args.member_key)
        created = await client.register_member(me["agency"], args.name, roles, new_member)
        new_member.registered(created["id"], created["agency"], client.base_url, args.name).save(args.member_key)
    else:
        created = await client.register_member(me["agency"], args.name, roles, load_enrolment(args.member_key))
    return {"kind": "member_added"} | created


_members_add = with_client(_members_add_work)


async def _members_list_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    # Page by page: the directory is never fetched in one answer.
    agencies = await client.agencies()
    if args.agency is not None:
        agencies = [a for a in agencies if a["id"] == args.agency]
        if not agencies:
            raise InvalidRequest(f"Agency {args.agency} is not in the directory; 'exchange members list' lists them.")
    return {"kind": "directory", "agencies": agencies, "members": await client.directory_members(args.agency)}


_members_list = with_client(_members_list_work)


async def _whoami_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "member"} | await client.me()


_whoami = with_client(_whoami_work)


async def _send_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    packet_file = _load_json(args.file)
    sealed = await client.prepare(
        packet_file, base_dir=args.file.resolve().parent, allow_identifiers=args.allow_identifiers
    )
    approval = None
    if args.approval_from is not None:
        manager = MemberCredentials.load(args.approval_from)
        async with ExchangeClient(client.base_url, manager) as manager_client:
            approval = manager_client.approval_for(sealed.manifest["packet_id"], sealed.manifest_digest)
    return {"kind": "sent"} | await client.submit(sealed, approval)


_send = with_client(_send_work)


async def _consult_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    packet_file = _load_json(args.file)
    if not isinstance(packet_file, dict) or packet_file.get("purpose") != "anonymous_consultation":
        raise InvalidRequest(
            "A consultation file has purpose anonymous_consultation; start from"
            " 'exchange template anonymous_consultation'."
        )
    sealed = await client.prepare(
        packet_file, base_dir=args.file.resolve().parent, allow_identifiers=args.allow_identifiers
    )
    return {"kind": "sent"} | await client.submit(sealed)


_consult = with_client(_consult_work)


async def _listing(client: ExchangeClient, args: argparse.Namespace, path: str, kind: str) -> Any:
    answer = await client.page(path, state=args.state, cursor=args.cursor, limit=args.limit)
    return {"kind": kind} | answer


async def _inbox_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return await _listing(client, args, "/v1/inbox", "inbox")


_inbox = with_client(_inbox_work)


async def _open_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    opened = await client.open(args.packet_id)
    return {
        "kind": "opened",
        "packet_id": opened.packet_id,
        "manifest_digest": opened.manifest_digest,
        "verified": True,
        "manifest": opened.manifest,
        "body": opened.body,
        "approval": opened.approval,
        "superseded_by": opened.superseded_by,
        "corrected_fields": list(opened.corrected_fields),
    }


_open = with_client(_open_work)


async def _ack_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return {"kind": "acknowledged"} | await client.acknowledge(args.packet_id)


_ack = with_client(_ack_work)


async def _outbox_work(client: ExchangeClient, args: argparse.Namespace) -> Any:
    return await _listing(client, args, "/v1/outbox", "outbox")


_outbox = with_client(_outbox_work)


# ---------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ApiError as error:
        return output.error(args, error.problem, error.http_status)
    except ExchangeError as error:
        return output.error(args, {"code": error.code, "title": error.title, "detail": error.detail} | error.extras)
    except OSError as error:
        return output.error(
            args, {"code": "client.connection", "detail": f"Cannot reach the server or a file: {error}"}
        )
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get("EXCHANGE_DEBUG"):
            raise
        return output.error(
            args,
            {
                "code": "client.internal_error",
                "detail": f"An internal error ({type(error).__name__}) stopped the command; "
                "run it again with EXCHANGE_DEBUG=1 to see the details, and report it.",
            },
        )


if __name__ == "__main__":
    raise SystemExit(main())
