"""A request's nonce, stored in the same commit as the change the request makes.

Every signed request's ``(keyid, nonce)`` must be stored durably before its answer, so a captured
request cannot be replayed, even across a restart. A request that changes something would pay a
commit (an fsync) for its nonce and another for its change; instead the web layer leaves the nonce
pending here (a context variable: one per request task) and the request's first change stores it
in its own transaction. A replay racing its original then finds the nonce taken inside that
transaction and is refused (401) with its change rolled back. A request that changes nothing has
its nonce stored on its own once its handler returns (see ``exchange.web.auth``).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from exchange.errors import AuthenticationFailed
from exchange.store import Transaction

REPLAYED = "This request was already received once (replayed nonce); sign it afresh."


@dataclass
class PendingNonce:
    key_id: str
    nonce: str
    expires: str
    #: Set once a committed change holds it (a change that rolled back leaves it pending).
    stored: bool = False


PENDING: ContextVar[PendingNonce | None] = ContextVar("pending_nonce", default=None)


async def store_pending(tx: Transaction) -> PendingNonce | None:
    """Store this request's pending nonce in ``tx``; :class:`AuthenticationFailed` if it is taken (a replay)."""
    pending = PENDING.get()
    if pending is None or pending.stored:
        return None
    if not await tx.remember_nonce(pending.key_id, pending.nonce, pending.expires):
        raise AuthenticationFailed(REPLAYED)
    return pending
