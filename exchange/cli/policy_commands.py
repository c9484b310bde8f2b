"""``exchange purposes | template | check | rules``: practitioner help that works offline.

None of these commands talks to a server: they read the purpose catalogue in ``schemas/`` and,
for ``check``, a packet file, and explain the sharing rules before anything is sent.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from exchange.errors import ExchangeError, InvalidRequest
from exchange.policy import explain
from exchange.policy.catalogue import Catalogue, load_catalogue
from exchange.policy.packet_file import check_packet_file, clean_packet_file
from exchange.policy.requests import request_template

#: ``exchange check`` exit codes: passed, rules broken (or file malformed), unusable command line.
EXIT_PASSED, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``purposes``, ``template``, ``check`` and ``rules`` subcommands."""
    p = subparsers.add_parser("purposes", help="list the purposes a packet may be shared for")
    _options(p)
    p.set_defaults(func=_purposes)

    p = subparsers.add_parser(
        "template", help="print a starting packet file for PURPOSE, with an explanation of each choice"
    )
    _options(p)
    p.add_argument("purpose", help="a purpose code from `exchange purposes`")
    p.add_argument("--request", action="store_true", help="a request file asking for information, not a packet file")
    p.set_defaults(func=_template)

    p = subparsers.add_parser("check", help="check a packet file against the sharing rules before sending it")
    _options(p)
    p.add_argument("file", type=Path, help="the packet file (JSON)")
    p.add_argument("--sender-kind", help="your agency's kind, e.g. education (checked when sending if omitted)")
    p.add_argument(
        "--recipient-kind",
        action="append",
        default=[],
        metavar="[TO=]KIND",
        help="recipients' agency kind: once for all, once per 'to' entry in order, or TO=KIND for one entry",
    )
    p.add_argument("--recipient-cap", type=int, default=25, help="the server's cap on recipients (default 25)")
    p.add_argument("--now", help="judge as at this time (ISO 8601; default: now)")
    p.set_defaults(func=_check)

    p = subparsers.add_parser("rules", help="print every sharing rule: its id, its sentence and its source")
    _options(p)
    p.set_defaults(func=_rules)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--schemas", type=Path, help="catalogue folder (default: the installed schemas/)")


def _catalogue(args: argparse.Namespace) -> Catalogue:
    return load_catalogue(args.schemas)


def _fail(args: argparse.Namespace, error: ExchangeError, code: int = EXIT_REFUSED) -> int:
    problem: dict[str, Any] = {"code": error.code, "detail": error.detail, **error.extras}
    if args.json:
        print(json.dumps({"error": problem}, indent=2))
    else:
        print(error.detail, file=sys.stderr)
        for item in error.extras.get("errors", []) or []:
            where = item.get("path") if isinstance(item, dict) else None
            message = item.get("message") if isinstance(item, dict) else item
            print(f"  - {where + ': ' if where else ''}{message}", file=sys.stderr)
    return code


def _purposes(args: argparse.Namespace) -> int:
    try:
        print(explain.render_purposes(_catalogue(args), args.json), end="")
    except ExchangeError as error:
        return _fail(args, error)
    return EXIT_PASSED


def _rules(args: argparse.Namespace) -> int:
    print(explain.render_rules(args.json), end="")
    return EXIT_PASSED


def _template(args: argparse.Namespace) -> int:
    if args.request:
        return _request_template(args)
    try:
        template = explain.render_template(_catalogue(args), args.purpose, today=date.today())
    except ExchangeError as error:
        return _fail(args, error)
    if args.json:
        document = {
            "purpose": args.purpose,
            "template": clean_packet_file(template),
            "explanations": explain.template_explanations(template),
        }
        print(json.dumps(document, indent=2))
    else:
        print(json.dumps(template, indent=2, ensure_ascii=False))
        print(
            "Fill in every null, then: exchange check FILE --sender-kind YOUR_AGENCY_KIND && exchange send FILE",
            file=sys.stderr,
        )
    return EXIT_PASSED


def _request_template(args: argparse.Namespace) -> int:
    try:
        catalogue = _catalogue(args)
    except ExchangeError as error:
        return _fail(args, error)
    template = request_template(catalogue, args.purpose)
    if template is None:
        return _fail(args, InvalidRequest(f"There is no purpose {args.purpose!r}; see `exchange purposes`."))
    if args.json:
        print(json.dumps({"purpose": args.purpose, "template": clean_packet_file(template)}, indent=2))
    else:
        print(json.dumps(template, indent=2, ensure_ascii=False))
        print("Fill in every null and the fields you need, then: exchange request FILE", file=sys.stderr)
    return EXIT_PASSED


def _check(args: argparse.Namespace) -> int:
    try:
        document = json.loads(args.file.read_text(encoding="utf-8"))
    except OSError as error:
        print(f"Cannot read {args.file}: {error.strerror}.", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"{args.file} is not valid JSON: {error}.", file=sys.stderr)
        return EXIT_USAGE
    try:
        now = _parse_now(args.now)
        recipient_kinds = _recipient_kinds(args.recipient_kind, document)
    except ValueError as error:
        print(str(error), file=sys.stderr)
        return EXIT_USAGE
    try:
        decision = check_packet_file(
            document,
            _catalogue(args),
            args.sender_kind,
            recipient_kinds,
            now,
            recipient_cap=args.recipient_cap,
        )
    except ExchangeError as error:
        return _fail(args, error)
    output = explain.render_decision(decision, args.json)
    print(output, end="" if output.endswith("\n") else "\n")
    return EXIT_PASSED if decision.accepted else EXIT_REFUSED


def _parse_now(text: str | None) -> datetime:
    if text is None:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _recipient_kinds(options: Sequence[str], document: Any) -> dict[str, str]:
    """Map the packet file's ``to`` entries to the agency kinds given on the command line."""
    to = document.get("to") if isinstance(document, dict) else None
    entries = [entry for entry in to if isinstance(entry, str)] if isinstance(to, list) else []
    named = dict(option.split("=", 1) for option in options if "=" in option)
    plain = [option for option in options if "=" not in option]
    if len(plain) == 1:
        kinds = dict.fromkeys(entries, plain[0])
    elif plain and len(plain) == len(entries):
        kinds = dict(zip(entries, plain, strict=True))
    elif plain:
        raise ValueError(
            f"Give --recipient-kind once for every recipient, or once per 'to' entry ({len(entries)}), or as TO=KIND."
        )
    else:
        kinds = {}
    kinds.update(named)
    return kinds
