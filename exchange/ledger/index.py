"""What an auditor can look ledger entries up by: type, time, packet, members, agencies, requests, subjects.

Pure: the store calls :func:`entry_refs` when it appends an entry and keeps the pairs in an index,
so a filtered read touches only matching entries instead of scanning the whole ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The filters the auditor API offers, and the index kinds behind them.
REF_KINDS = ("type", "time", "packet", "member", "agency", "request", "subject")


def entry_refs(entry: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(kind, value)`` pairs an entry is found by; a member or agency counts as actor or as subject."""
    actor = entry.get("actor") if isinstance(entry.get("actor"), Mapping) else {}
    details = entry.get("details") if isinstance(entry.get("details"), Mapping) else {}
    assert isinstance(actor, Mapping) and isinstance(details, Mapping)
    candidates = [
        ("type", entry.get("type")),
        ("time", entry.get("time")),
        ("packet", entry.get("packet")),
        ("member", actor.get("member")),
        ("member", details.get("member")),
        ("member", details.get("recipient")),
        ("member", details.get("requester")),
        ("member", details.get("holder_member")),
        ("agency", actor.get("agency")),
        ("agency", details.get("agency")),
        ("agency", details.get("recipient_agency")),
        # An escalation is about who owes something and who is waiting for it.
        ("member", details.get("owed_by_member")),
        ("member", details.get("owed_to_member")),
        ("agency", details.get("owed_by_agency")),
        ("agency", details.get("owed_to_agency")),
        ("agency", details.get("holder_agency")),
        ("request", entry.get("request")),
        ("request", details.get("request")),
        ("request", details.get("in_reply_to")),
        # A subject is only ever a pseudonym (HMAC of the identifier), never the identifier itself.
        ("subject", details.get("subject")),
    ]
    return list(dict.fromkeys((kind, value) for kind, value in candidates if isinstance(value, str) and value))
