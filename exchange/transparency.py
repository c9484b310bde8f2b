"""Key transparency, the member's half: check a member's key history against the signed ledger.

A sender's client seals only to a key that the ledger shows was made for that recipient and not
revoked since; a member's ``exchange keys monitor`` checks that the ledger holds no key for them
that their own key file does not know. Together these catch a substituted key (a server, a database
administrator or an agency admin putting their own key under a member's name) without anyone
comparing fingerprints by phone: the substitute must be in the ledger for senders to accept it, and
there the victim sees it.

What the client keeps between runs (:class:`TrustState`, a small JSON file beside the key file): the
server's head-signing key, pinned on first use, the largest signed head it verified, and the keys
it has already checked (the ledger only grows, so a checked key stays checked; a revocation is still
noticed through the directory, which stops listing the key).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange import crypto
from exchange.errors import CryptoError, KeyTransparencyError, LedgerProofError
from exchange.ledger import TreeHead
from exchange.ledger.proofs import check_head_extends, check_inclusion_answer, checked_head

TRUST_FORMAT = "safeguarding-exchange/trust/v1"


@dataclass(frozen=True)
class LedgerKey:
    """One key as the ledger tells its story: made when, by whom, and revoked when (if it was)."""

    key_id: str
    use: str
    added_seq: int
    added_time: str
    #: The member whose request made the key (the member themselves, or the admin who registered them);
    #: ``None`` for the operator (``exchange init``, ``exchange operator register``, demo seeding).
    added_by: str | None
    revoked_seq: int | None = None
    revoked_time: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_seq is not None


@dataclass(frozen=True)
class KeyHistory:
    """A member's keys as the ledger (verified) says; ``pending`` events are not in a signed head yet."""

    member: str
    keys: dict[str, LedgerKey]
    head: TreeHead
    pending: int


@dataclass
class TrustState:
    """What a member's client has verified before: the server's key, the largest head, checked keys."""

    server_key: bytes | None = None
    head: TreeHead | None = None
    #: ``key_id`` → ``member``: keys already found in the ledger for that member (and not revoked then).
    checked: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    #: Held while a check reads and advances ``head``: the next check must ask from the head this one kept.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path) -> TrustState:
        """Read the state kept beside a key file; an absent file is a first use (nothing pinned yet)."""
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path=path)
        except (OSError, ValueError):
            raise KeyTransparencyError(
                f"The trust file {path} is damaged. It records the ledger your client has verified; move it"
                " away only if you know why it changed (a new one starts trusting the server afresh)."
            ) from None
        if not isinstance(document, dict) or document.get("format") != TRUST_FORMAT:
            raise KeyTransparencyError(f"{path} is not a trust file ({TRUST_FORMAT}).")
        try:
            server_key = crypto.b64decode(document["server_key"]) if document.get("server_key") else None
            head = TreeHead.from_json(document["head"]) if document.get("head") else None
            checked = {str(k): str(v) for k, v in dict(document.get("checked") or {}).items()}
        except (KeyError, TypeError, ValueError, CryptoError, LedgerProofError):
            raise KeyTransparencyError(f"The trust file {path} is damaged.") from None
        return cls(server_key, head, checked, path)

    def save(self) -> None:
        if self.path is None:
            return
        document = {
            "format": TRUST_FORMAT,
            "server_key": crypto.b64encode(self.server_key) if self.server_key else None,
            "head": self.head.to_json() if self.head else None,
            "checked": dict(sorted(self.checked.items())),
        }
        crypto.replace_private_file(self.path, (json.dumps(document, indent=2) + "\n").encode())

    def pin_server_key(self, offered: bytes) -> bytes:
        """The server's head-signing key: pinned on first use, and never silently replaced after."""
        if self.server_key is None:
            self.server_key = offered
        elif offered != self.server_key:
            raise KeyTransparencyError(
                "The server now signs its ledger with a different key from the one your client pinned on first use."
                " Nothing was sealed. Ask the exchange's operator whether the server key was changed, and how to"
                " check the new one, before trusting it."
            )
        return self.server_key


def check_key_history(answer: Mapping[str, Any], member_id: str, trust: TrustState) -> KeyHistory:
    """Verify a ``/v1/members/{id}/key-history`` answer and replay its events into the member's keys.

    Checks: every event's inclusion proof against the signed head; the head's signature with the
    pinned server key; the head consistent with the largest head verified before (then remembered);
    each event is a key event about ``member_id``. Raises :class:`LedgerProofError` (or its
    :class:`KeyTransparencyError`) on any failure; updates ``trust`` only when all of it verified.
    """
    try:
        if answer["member"] != member_id:
            raise KeyTransparencyError(f"The server answered with another member's key history ({answer['member']}).")
        server_key = trust.pin_server_key(crypto.b64decode(str(answer["server_key"]), what="server key"))
        events = list(answer["events"])
        pending = int(answer["pending"])
        head_json = answer["head"]
    except (KeyError, TypeError, ValueError, CryptoError):
        raise LedgerProofError("The server's key history is not in the expected form.") from None
    head = checked_head(head_json, server_key)
    keys: dict[str, LedgerKey] = {}
    for event in events:
        check_inclusion_answer(dict(event) | {"head": head_json}, server_key)
        entry = _entry(event)
        if entry.get("seq") != event.get("seq"):
            raise KeyTransparencyError("A key event's position in the ledger does not match the entry's own number.")
        _replay(entry, member_id, keys)
    if trust.head is not None:
        check_head_extends(trust.head, head, answer, server_key)
    if trust.head is None or head.size > trust.head.size:
        trust.head = head
    return KeyHistory(member_id, keys, head, pending)


def _entry(event: Mapping[str, Any]) -> dict[str, Any]:
    try:
        entry = json.loads(crypto.b64decode(str(event["entry"]), what="entry"))
    except (KeyError, ValueError, CryptoError):
        raise LedgerProofError("A key event's entry is not readable JSON.") from None
    if not isinstance(entry, dict):
        raise LedgerProofError("A key event's entry is not a JSON object.")
    return entry


def _replay(entry: Mapping[str, Any], member_id: str, keys: dict[str, LedgerKey]) -> None:
    """Apply one key event about ``member_id`` to the keys made so far."""
    details = entry.get("details") if isinstance(entry.get("details"), Mapping) else {}
    actor = entry.get("actor") if isinstance(entry.get("actor"), Mapping) else {}
    assert isinstance(details, Mapping) and isinstance(actor, Mapping)
    if details.get("member") != member_id:
        raise KeyTransparencyError("The server included another member's event in this member's key history.")
    seq, time, by = int(entry["seq"]), str(entry.get("time")), actor.get("member")
    kind = entry.get("type")
    if kind == "member.registered":
        for made in ("signing", "encryption"):
            registered = details.get(f"{made}_key")
            if isinstance(registered, str):
                keys[registered] = LedgerKey(registered, made, seq, time, by)
    elif kind == "key.added":
        added, use = details.get("key"), details.get("use")
        if isinstance(added, str) and isinstance(use, str):
            keys[added] = LedgerKey(added, use, seq, time, by)
    elif kind == "key.revoked":
        key_id = details.get("key")
        if isinstance(key_id, str) and key_id in keys:
            old = keys[key_id]
            keys[key_id] = LedgerKey(old.key_id, old.use, old.added_seq, old.added_time, old.added_by, seq, time)
    else:
        raise KeyTransparencyError(f"The server included a {kind!r} entry in a key history.")


def check_sealing_key(history: KeyHistory, key_id: str, use: str = "encryption") -> LedgerKey:
    """The ledger's record of the key a sender is about to seal to; :class:`KeyTransparencyError` unless
    the ledger made it for this member, for this use, and has not revoked it."""
    found = history.keys.get(key_id)
    if found is None or found.use != use:
        raise KeyTransparencyError(
            f"The directory offers key {key_id} for {history.member}, but the signed ledger holds no such {use} key"
            " for them. Nothing was sealed to it. Tell the recipient and your agency's admin: someone may be trying"
            " to read what is sent to this member."
        )
    if found.revoked:
        raise KeyTransparencyError(
            f"The directory offers key {key_id} for {history.member}, but the ledger shows it revoked at"
            f" {found.revoked_time}. Nothing was sealed to it; ask the recipient to check their keys."
        )
    return found
