"""Opaque cursors for listings: nothing is silently cut off at a fixed number of rows.

A cursor is the (time, id) of the last row a page showed, base64url-encoded JSON; the store
continues strictly after it (keyset pagination, so rows added meanwhile neither repeat nor
vanish). A cursor is opaque to clients: they send back ``next_cursor`` as they received it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any, TypeVar

from exchange.domain import Page
from exchange.errors import InvalidRequest

#: The longest cursor accepted (schemas/openapi.v1.json says the same).
MAX_CURSOR = 512

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)


def encode(created: str, item_id: str) -> str:
    raw = json.dumps([created, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str | None) -> Page | None:
    """The position a cursor names; a cursor not made by :func:`encode` is a 400."""
    if not cursor:
        return None
    # A cursor this server gives out is under 200 characters; a long one could nest JSON deep enough to
    # exhaust the parser (RecursionError, a 500, before this check).
    if len(cursor) > MAX_CURSOR:
        raise InvalidRequest("The cursor is not one this server gave out; start again without it.")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, item_id = json.loads(raw)
    except (binascii.Error, ValueError, TypeError, RecursionError):
        raise InvalidRequest("The cursor is not one this server gave out; start again without it.") from None
    if not isinstance(created, str) or not isinstance(item_id, str):
        raise InvalidRequest("The cursor is not one this server gave out; start again without it.")
    return Page(created, item_id)


def states(text: str | None, kind: type[E], *, what: str = "state") -> frozenset[E] | None:
    """A comma-separated state filter (``delivered,opened``); an unknown state is a 400 naming the known ones.

    ``what`` names the filter in that message (the directory's ``role`` filter is parsed here too)."""
    if not text:
        return None
    wanted = [part.strip() for part in text.split(",") if part.strip()]
    known = {member.value: member for member in kind}
    if any(w not in known for w in wanted):
        # The unknown text is not repeated: a filter is no place for it, and problems may be logged.
        raise InvalidRequest(f"Unknown {what}; use any of: {', '.join(known)}.")
    return frozenset(known[w] for w in wanted)


def page(
    items: list[dict[str, Any]], rows: Sequence[T], limit: int, position: Callable[[T], tuple[str, str]], *, key: str
) -> dict[str, Any]:
    """``{key: items, "next_cursor": ...}``; ``rows`` was read with ``limit + 1`` to know if more follow."""
    more = len(rows) > limit
    return {key: items, "next_cursor": encode(*position(rows[limit - 1])) if more else None}
