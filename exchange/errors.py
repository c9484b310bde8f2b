"""The project's one error hierarchy.

Every error the domain raises is an :class:`ExchangeError`. Each carries a stable ``code``
(rendered as the problem type, RFC 9457), an HTTP ``status`` and a plain-English ``detail``
that is safe to show a practitioner: it never holds content, key material, SQL or a
traceback. Library exceptions are wrapped at the edge of the module that calls the library.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar


class ExchangeError(Exception):
    """Base class of every error the exchange raises on purpose."""

    code: ClassVar[str] = "exchange.error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "The exchange could not complete the request"

    def __init__(self, detail: str, *, extras: Mapping[str, Any] | None = None, retry_after: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extras: dict[str, Any] = dict(extras or {})
        #: Seconds after which trying again may succeed (sent as ``Retry-After``), when that is known.
        self.retry_after = retry_after


class InvalidRequest(ExchangeError):
    """The request is not well formed (bad JSON, missing parameter, wrong type)."""

    code = "request.invalid"
    status = 400
    title = "The request is not well formed"


class InvalidQuery(InvalidRequest):
    """A query parameter is unknown, repeated, or not of its documented shape (``schemas/openapi.v1.json``).

    The detail names the parameter and the expected shape, never the value sent: a value in the wrong
    place may be exactly what must not be repeated (a child's name typed into a filter). The code stays
    ``request.invalid``; ``extras["parameter"]`` names the parameter when its name is one of ours.
    """


class SchemaViolation(ExchangeError):
    """A document does not match its JSON Schema in ``schemas/``."""

    code = "schema.invalid"
    status = 422
    title = "The document does not match its schema"


class PayloadTooLarge(ExchangeError):
    code = "request.too_large"
    status = 413
    title = "The request body is too large"


class AuthenticationFailed(ExchangeError):
    """The request is unsigned, badly signed, stale, replayed or from an unknown key."""

    code = "auth.failed"
    status = 401
    title = "The request could not be authenticated"


class Forbidden(ExchangeError):
    """The member is authenticated but their role or relationship does not allow this."""

    code = "auth.forbidden"
    status = 403
    title = "You are not allowed to do this"


class SenderMismatch(Forbidden):
    """The manifest names a sender other than the member who signed the request (see the subclasses)."""


class SenderNotSigner(SenderMismatch):
    """The manifest names another member as its sender: a packet goes only in its signer's own name."""

    code = "sender.not_signer"
    title = "The packet names another member as its sender"


class SenderNotMemberOfAgency(SenderMismatch):
    """The manifest puts its sender in an agency they are not a member of."""

    code = "sender.not_member_of_agency"
    title = "The sender is not a member of the agency the packet names"


class NotFound(ExchangeError):
    """The thing does not exist, or exists but the caller may not know it does."""

    code = "not_found"
    status = 404
    title = "Not found"


class Gone(ExchangeError):
    """The thing existed and the caller may know it, but its content is no longer to be had."""

    code = "gone"
    status = 410
    title = "No longer available"


class Conflict(ExchangeError):
    """The request clashes with the current state (already acknowledged, duplicate id...)."""

    code = "state.conflict"
    status = 409
    title = "The request conflicts with the current state"


class StateChanged(Conflict):
    """A compare-and-set found the state changed since it was read: another transition won."""

    code = "lifecycle.state_changed"
    title = "Someone else changed this first"


class RequestTimeout(ExchangeError):
    """The request's body did not arrive within the time allowed; nothing was done."""

    code = "request.timeout"
    status = 408
    title = "The request took too long to arrive"


class HeaderTooLarge(ExchangeError):
    """A header field is longer than the exchange accepts for it."""

    code = "request.header_too_large"
    status = 431
    title = "A request header is too large"


class RateLimited(ExchangeError):
    code = "request.rate_limited"
    status = 429
    title = "Too many requests"


class ServerBusy(ExchangeError):
    """The server is handling as many requests as it is configured to; nothing was done."""

    code = "server.busy"
    status = 503
    title = "The exchange is busy"


class ReadOnly(ExchangeError):
    """The exchange cannot record changes just now, so it refuses them; it still serves reads.

    Raised when the record log or the store cannot be written (see ``exchange.record``): nothing was
    changed, and trying again after ``Retry-After`` is safe. ``/health`` says why meanwhile.
    """

    code = "read_only"
    status = 503
    title = "The exchange is read-only for now"


class DiskFull(ReadOnly):
    """The disk holding the record log or the store is full (``extras["cause"]`` says which)."""

    code = "read_only.disk_full"


class RecordLogUnwritable(ReadOnly):
    """The record log cannot be written or synced for another reason (permissions, I/O error)."""

    code = "read_only.record_log"


class StoreUnwritable(ReadOnly):
    """The store cannot be written for another reason (I/O error, read-only file or file system)."""

    code = "read_only.store"


class CryptoError(ExchangeError):
    """A signature, seal or digest does not verify, or key material is unusable."""

    code = "crypto.invalid"
    status = 422
    title = "A signature, seal or digest does not verify"


class KeyFileError(ExchangeError):
    """A key file is missing, unreadable, or too widely readable."""

    code = "keys.file"
    status = 500
    title = "A key file cannot be used"


class LedgerProofError(ExchangeError):
    """A Merkle inclusion or consistency proof, or a ledger export, does not verify."""

    code = "ledger.proof_invalid"
    status = 422
    title = "The ledger proof does not verify"


class KeyTransparencyError(LedgerProofError):
    """A recipient's key, or one of the member's own, is not what the signed ledger says it should be.

    Raised on the member's side (a sender about to seal, ``exchange keys monitor``): the directory
    offered a key the ledger does not hold for that member, or the ledger holds a key for a member that
    their key file does not know. Either way nothing is sealed or trusted until it is explained.
    """

    code = "keys.transparency"
    title = "A key does not match the ledger"


class NotKeyOwner(Forbidden):
    """Only a member adds keys to their own account, signed with a current key of theirs."""

    code = "keys.not_owner"
    title = "Only the member can add their own keys"


class RoleNeedsOperator(Forbidden):
    """A role that reaches beyond one agency (auditor) is granted by the deployment's operator."""

    code = "directory.role_needs_operator"
    title = "This role is granted by the deployment's operator"


class ProofOfPossessionInvalid(ExchangeError):
    """A new key comes without a valid signature made with it (the owner's proof of possession)."""

    code = "keys.proof_invalid"
    status = 422
    title = "The new key's proof of possession does not verify"


class KeyInUse(Conflict):
    """A key registered for one member cannot be registered again (for them or anyone else)."""

    code = "keys.in_use"
    title = "This key is already registered"


class IdentifyingContent(ExchangeError):
    """An anonymous consultation's text looks identifying (the sender's client checks before sealing).

    The detail names the fields and the kinds of identifier, never the values.
    """

    code = "consultation.identifying"
    status = 422
    title = "The consultation may identify the child or family"


class NoCurrentKey(InvalidRequest):
    """Nobody a packet or request is addressed to holds a current encryption key, so nobody could open it.

    A duty member of an agency inbox without one is skipped (and the sender told); this is raised when a
    named recipient has none, or when no duty member of the agency has one.
    """

    code = "recipient.no_current_key"
    status = 422
    title = "No recipient could open it"


class StoreUnavailable(ExchangeError):
    code = "store.unavailable"
    status = 503
    title = "The store is not reachable"


@dataclass(frozen=True)
class Violation:
    """One broken sharing rule: which rule, where in the manifest, and why in plain words."""

    rule: str
    path: str
    message: str
    source: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "path": self.path, "message": self.message}
        if self.source:
            out["source"] = self.source
        return out


class PolicyViolation(ExchangeError):
    """The packet breaks one or more sharing rules; ``violations`` lists every one."""

    code = "policy.violation"
    status = 422
    title = "The packet breaks the sharing rules"

    def __init__(self, violations: Sequence[Violation]) -> None:
        count = len(violations)
        noun = "rule" if count == 1 else "rules"
        super().__init__(
            f"The packet was not sent: it breaks {count} sharing {noun}. Nothing was delivered.",
            extras={"violations": [v.as_json() for v in violations]},
        )
        self.violations = tuple(violations)
