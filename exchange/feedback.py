"""The feedback loop's pure parts: action codes, statement ids, note contexts, the chain, verification.

A recipient's loop is a chain of signed statements (:func:`exchange.statements.loop_statement`):
an action report, then the sender's confirmation (the loop closed) or query, whose answer is
another report, and so on. Each statement names the one it answers (``answers``: ``None`` for the
first report), so the chain orders itself and the server accepts a statement only if it answers
the latest one. A statement's id is the digest of its exact bytes, so anyone holding the bytes can
check the id and every link of the chain.

A narrative (a report's account, a query's question) is sealed (HPKE) to the member it is for,
bound to :func:`note_context`, and its digest is in the signed statement: a note moved onto another
statement, step, packet or reader neither opens nor matches the digest.

Used by both sides: the service checks codes and the chain; the SDK verifies what the server
returns (:func:`verify_loop`) before it believes a word of it. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from exchange import crypto, statements
from exchange.errors import Conflict, CryptoError, ExchangeError, InvalidRequest
from exchange.keyfile import MemberCredentials
from exchange.policy import vocabulary as v

REPORT, CONFIRM, QUERY = "report", "confirm", "query"
STEPS = (REPORT, CONFIRM, QUERY)

#: What may follow each step in one recipient's loop (``None``: the loop has no statement yet).
FOLLOWS: Mapping[str | None, frozenset[str]] = {
    None: frozenset({REPORT}),
    REPORT: frozenset({CONFIRM, QUERY}),
    QUERY: frozenset({REPORT}),
    CONFIRM: frozenset(),
}

#: The last step a recipient's loop shows in each copy state (a loop cut short by the server shows).
LAST_STEP: Mapping[str, str | None] = {
    "pending": None,
    "withdrawn": None,
    "delivered": None,
    "opened": None,
    "acknowledged": None,
    "recalled": None,
    "undelivered": None,
    "action_reported": REPORT,
    "queried": QUERY,
    "confirmed": CONFIRM,
}

#: Longest narrative, question or advice a client seals (UTF-8 bytes): a note, not a document.
NOTE_MAX_BYTES = 8000


class ActionNotAllowed(ExchangeError):
    """An action code outside the vocabulary, or one that does not fit this kind of packet."""

    code = "loop.action_not_allowed"
    status = 422
    title = "That action does not fit this packet"


class StaleStatement(Conflict):
    """The statement answers an earlier statement, not the latest one in the loop."""

    code = "loop.stale"
    title = "The loop has moved on since this statement was written"


def statement_id(statement: bytes) -> str:
    """A statement's id: the digest of its exact signed bytes (so the id can be checked, and chained)."""
    return "stm_" + crypto.sha256(statement).hex()[:40]


def note_context(step: str, packet_id: str, recipient: str, answers: str | None) -> str:
    """What a loop note is bound to. Unique per statement: a loop's first report answers nothing and
    every later statement answers a different one."""
    return f"loop/{step}/{packet_id}/{recipient}/{answers or 'first'}"


def actions_for(kind: str) -> list[str]:
    """The action codes a report on a packet of ``kind`` may carry, in vocabulary order."""
    if kind == "consultation":
        return [code for code in v.ACTIONS if code in v.CONSULTATION_ACTIONS]
    return [code for code in v.ACTIONS if code not in v.CONSULTATION_ONLY_ACTIONS]


def check_action(kind: str, action: str, *, has_narrative: bool) -> None:
    """Raise :class:`ActionNotAllowed` unless ``action`` may answer a packet of ``kind`` as given."""
    if action not in v.ACTIONS:
        raise ActionNotAllowed(
            f"'{action}' is not an action code; use one of {v.one_of(v.ACTIONS)} (see 'exchange actions').",
            extras={"action": action if action.isidentifier() and len(action) <= 64 else None},
        )
    allowed = actions_for(kind)
    if action not in allowed:
        why = (
            "an anonymous consultation identifies nobody, so it is answered with advice, not an assessment"
            if kind == "consultation"
            else "advice in reply is for anonymous consultations; say what you did or will do"
        )
        raise ActionNotAllowed(f"'{action}' does not answer a {kind} packet: {why}. Use {v.one_of(allowed)}.")
    if action in v.ACTIONS_NEEDING_NARRATIVE and not has_narrative:
        raise ActionNotAllowed(f"The action '{action}' needs a narrative saying what it is (sealed to the sender).")


def note_text(text: str | None, what: str) -> str | None:
    """A narrative, question or advice as it will be sealed; :class:`InvalidRequest` if empty or too long."""
    if text is None:
        return None
    if not text.strip():
        raise InvalidRequest(f"The {what} is empty.")
    if len(text.encode()) > NOTE_MAX_BYTES:
        raise InvalidRequest(f"The {what} is longer than {NOTE_MAX_BYTES} bytes; keep it to a note.")
    return text


def answers_in(statement: bytes) -> str | None:
    """The id a stored statement answers (the service reads it from the exact bytes signed)."""
    answers = json.loads(statement).get("answers")
    return answers if isinstance(answers, str) else None


T = TypeVar("T")


def in_chain_order(items: Sequence[T], id_of: Callable[[T], str], answers_of: Callable[[T], str | None]) -> list[T]:
    """``items`` ordered by their ``answers`` links; ValueError unless they form one unbroken chain."""
    by_answered: dict[str | None, T] = {}
    for item in items:
        answered = answers_of(item)
        if answered in by_answered:
            raise ValueError("two statements answer the same statement")
        by_answered[answered] = item
    ordered: list[T] = []
    current: str | None = None
    while current in by_answered:
        item = by_answered.pop(current)
        ordered.append(item)
        current = id_of(item)
    if by_answered:
        raise ValueError("a statement answers one that is not in this loop")
    return ordered


# ------------------------------------------------------------------------------ verifying (SDK side)


@dataclass(frozen=True)
class VerifiedStatement:
    """One loop statement whose id, signature, manifest digest, author and note digest were checked."""

    id: str
    step: str
    packet_id: str
    recipient: str
    author: str
    action: str | None
    answers: str | None
    key_id: str
    created: str
    #: The member the sealed note is for (the sender for a report, the recipient for a query).
    note_for: str | None
    #: The opened note, when it is for the caller and their key file holds its key.
    note: dict[str, Any] | None
    #: The statement carries a note the caller cannot open (it is someone else's, or the key is gone).
    note_sealed: bool
    #: The note was deleted at the end of the packet's retention period; its digest stays signed.
    note_removed: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "step": self.step,
            "author": self.author,
            "recipient": self.recipient,
            "action": self.action,
            "action_words": v.ACTIONS.get(self.action) if self.action else None,
            "answers": self.answers,
            "key_id": self.key_id,
            "created": self.created,
            "note_for": self.note_for,
            "note": self.note,
            "note_sealed": self.note_sealed,
            "note_removed": self.note_removed,
            "verified": True,
        }


@dataclass(frozen=True)
class RecipientLoop:
    member: str
    agency: str
    status: str
    words: str
    statements: tuple[VerifiedStatement, ...]

    @property
    def latest(self) -> VerifiedStatement | None:
        return self.statements[-1] if self.statements else None

    @property
    def latest_action(self) -> str | None:
        return next((s.action for s in reversed(self.statements) if s.step == REPORT), None)

    def as_json(self) -> dict[str, Any]:
        return {
            "member": self.member,
            "agency": self.agency,
            "status": self.status,
            "loop": self.words,
            "latest_action": self.latest_action,
            "statements": [s.as_json() for s in self.statements],
        }


@dataclass(frozen=True)
class Loop:
    """A packet's feedback loop as the caller may see it (every recipient's for the sender)."""

    packet_id: str
    manifest_digest: str
    sender: str
    kind: str
    recipients: tuple[RecipientLoop, ...]

    def recipient(self, member: str) -> RecipientLoop:
        for entry in self.recipients:
            if entry.member == member:
                return entry
        raise CryptoError(f"The loop of packet {self.packet_id} has nothing for {member}.")

    def as_json(self) -> dict[str, Any]:
        return {
            "packet_id": self.packet_id,
            "manifest_digest": self.manifest_digest,
            "sender": self.sender,
            "packet_kind": self.kind,
            "recipients": [r.as_json() for r in self.recipients],
        }


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise CryptoError(f"The loop's {what} is missing or not text.")
    return value


def verify_loop(document: Mapping[str, Any], credentials: MemberCredentials) -> Loop:
    """Check what ``GET /v1/packets/{id}/loop`` returned, and open the notes meant for ``credentials``.

    The manifest's digest is recomputed and its sender's signature checked; then every statement:
    its id against its bytes, its fields against the manifest, its signature against the key it
    names (whose id must be that key's fingerprint), its note against the digest it signed, and the
    chain of ``answers`` in the order the steps allow. Raises :class:`CryptoError` at the first
    thing that does not verify: a server that changed a stored statement or note is caught here.
    """
    manifest = document.get("manifest")
    if not isinstance(manifest, Mapping):
        raise CryptoError("The loop carries no manifest.")
    packet_id = _text(document.get("packet_id"), "packet id")
    digest = crypto.manifest_digest(manifest)
    if manifest.get("packet_id") != packet_id or document.get("manifest_digest") != digest:
        raise CryptoError("The loop's manifest is not this packet's, or its digest does not match it.")
    sender_key = crypto.b64decode(_text(document.get("sender_signing_key"), "sender key"), what="sender key")
    sender = manifest.get("sender") or {}
    if crypto.check_signing_public_key(sender_key) != sender.get("signing_key"):
        raise CryptoError("The sender's key the server returned is not the key the manifest names.")
    crypto.verify_manifest_signature(
        manifest, crypto.b64decode(_text(document.get("signature"), "signature"), what="manifest signature"), sender_key
    )
    addressed = {r.get("member"): r.get("agency") for r in manifest.get("recipients") or [] if isinstance(r, Mapping)}
    entries = []
    for entry in document.get("recipients") or []:
        member = _text(entry.get("member"), "recipient")
        if member not in addressed:
            raise CryptoError(f"The loop lists {member}, whom the manifest does not address.")
        checked = [
            _verify_statement(item, packet_id, digest, sender["member"], member, credentials)
            for item in entry.get("statements") or []
        ]
        try:
            ordered = in_chain_order(checked, lambda s: s.id, lambda s: s.answers)
        except ValueError as error:
            raise CryptoError(f"The loop of {member} is not one chain of statements: {error}.") from None
        previous: str | None = None
        for statement in ordered:
            if statement.step not in FOLLOWS[previous]:
                raise CryptoError(f"In the loop of {member}, a {statement.step} cannot follow a {previous}.")
            previous = statement.step
        status = str(entry.get("status"))
        if status in LAST_STEP and LAST_STEP[status] != previous:
            raise CryptoError(f"The loop of {member} is {status} but its last statement is {previous or 'none'}.")
        entries.append(RecipientLoop(member, str(addressed[member]), status, str(entry.get("loop")), tuple(ordered)))
    return Loop(packet_id, digest, str(sender["member"]), str(manifest.get("kind")), tuple(entries))


def _verify_statement(
    item: Mapping[str, Any],
    packet_id: str,
    digest: str,
    sender: str,
    recipient: str,
    credentials: MemberCredentials,
) -> VerifiedStatement:
    raw = crypto.b64decode(_text(item.get("statement"), "statement"), what="statement")
    if statement_id(raw) != item.get("id"):
        raise CryptoError("A loop statement's bytes do not match its id: it was changed.")
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise CryptoError("A loop statement is not JSON.") from None
    if not isinstance(parsed, dict) or crypto.canonical_json(parsed) != raw:
        raise CryptoError("A loop statement is not in canonical form.")
    step = parsed.get("step")
    if parsed.get("type") != statements.LOOP or step not in STEPS:
        raise CryptoError("A loop statement is not a loop statement.")
    author = recipient if step == REPORT else sender
    expected = {"packet_id": packet_id, "manifest_digest": digest, "recipient": recipient, "author": author}
    if any(parsed.get(k) != value for k, value in expected.items()):
        raise CryptoError(f"A {step} statement in the loop of {recipient} is about another packet, copy or author.")
    if item.get("type") != step or item.get("author") != author or item.get("action") != parsed.get("action"):
        raise CryptoError("A loop statement's listing does not say what its signed bytes say.")
    public = crypto.b64decode(_text(item.get("signing_key"), "signing key"), what="signing key")
    key_id = _text(item.get("key_id"), "key id")
    if crypto.check_signing_public_key(public) != key_id:
        raise CryptoError("A loop statement's signing key does not match its key id.")
    crypto.verify_signature(public, raw, crypto.b64decode(_text(item.get("signature"), "signature"), what="signature"))

    answers = parsed.get("answers")
    note_digest = parsed.get("note_digest")
    sealed_text = item.get("sealed_note")
    note_for = (sender if step == REPORT else recipient) if note_digest is not None else None
    note: dict[str, Any] | None = None
    removed = False
    if sealed_text is None:
        # A note is deleted with the packet's content at the end of retention; its digest stays signed.
        removed = note_digest is not None
    else:
        sealed = crypto.b64decode(_text(sealed_text, "sealed note"), what="sealed note")
        if note_digest is None or crypto.digest_text(sealed) != note_digest:
            raise CryptoError("A loop statement's sealed note is not the note its author signed.")
        key = credentials.encryption_key_for(str(item.get("note_key"))) if note_for == credentials.member_id else None
        if key is not None:
            note = crypto.open_note(
                key,
                sealed,
                str(note_for),
                str(item.get("note_key")),
                context=note_context(step, packet_id, recipient, answers if isinstance(answers, str) else None),
            )
    return VerifiedStatement(
        id=str(item["id"]),
        step=step,
        packet_id=packet_id,
        recipient=recipient,
        author=author,
        action=parsed.get("action"),
        answers=answers if isinstance(answers, str) else None,
        key_id=key_id,
        created=str(item.get("created")),
        note_for=note_for,
        note=note,
        note_sealed=sealed_text is not None and note is None,
        note_removed=removed,
    )
