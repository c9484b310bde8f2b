"""The one "current key" check behind every signed thing the exchange accepts.

A request signature, a manifest, an approval, an acknowledgement, an action report, a
confirmation or query, a decline, a decision not to share: each names a key id, and each is
accepted only if that key belongs to the member who is said to sign, has the signing use, is
within its validity and is not revoked at the moment it is presented (:meth:`MemberKey.current_for`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from exchange import crypto
from exchange.domain import KeyUse, MemberKey
from exchange.errors import CryptoError
from exchange.service.context import ServiceContext


async def current_key(ctx: ServiceContext, key_id: str, *, member_id: str, use: KeyUse, what: str) -> MemberKey:
    """The key ``key_id`` if it is a current ``use`` key of ``member_id``; raises :class:`CryptoError`."""
    key = await ctx.store.get_key(key_id)
    if key is None or not key.current_for(member_id, use, ctx.clock()):
        raise CryptoError(
            f"{what} names a key that is not a current {use.value} key of {member_id}"
            " (unknown, someone else's, expired or revoked)."
        )
    return key


async def verify_statement(
    ctx: ServiceContext, *, key_id: str, member_id: str, statement: bytes, signature: bytes, what: str
) -> MemberKey:
    """Check ``signature`` over ``statement`` by a current signing key of ``member_id``."""
    key = await current_key(ctx, key_id, member_id=member_id, use=KeyUse.SIGNING, what=what)
    try:
        crypto.verify_signature(key.public_bytes, statement, signature)
    except CryptoError:
        raise CryptoError(f"{what} does not verify: its signature is not over this statement.") from None
    return key


async def verify_signed(
    ctx: ServiceContext,
    document: Mapping[str, Any],
    *,
    member_id: str,
    statement: bytes,
    what: str,
    key_id: str | None = None,
) -> tuple[MemberKey, bytes]:
    """Check a document's base64 ``signature`` over ``statement`` by a current signing key of ``member_id``
    (``key_id``, or the document's own ``key_id``); return the key and the signature's bytes."""
    signature = crypto.b64decode(document["signature"], what=f"{what[0].lower()}{what[1:]}'s signature")
    key = await verify_statement(
        ctx,
        key_id=key_id if key_id is not None else document["key_id"],
        member_id=member_id,
        statement=statement,
        signature=signature,
        what=what,
    )
    return key, signature
