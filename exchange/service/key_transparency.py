"""Key transparency, the server's half: every key event of a member, each with its inclusion proof.

Every key a member has ever had entered the ledger in a ``member.registered``, ``key.added`` or
``key.revoked`` entry, and nothing else makes a key. Any member may ask for any member's key history:
a sender's client checks that the key it is about to seal to is one of them (and not revoked), and a
member's ``exchange keys monitor`` checks that every key there is one they made. The proofs lead to
the latest signed head and, given the size of a head the asker verified before, the answer proves
the new head consistent with it, so a server cannot show one member a history it hides from another
without forking the ledger for them.

What it reveals is what the directory already shows (members, roles, key ids) plus when keys changed.
"""

from __future__ import annotations

import json
from typing import Any

from exchange import crypto
from exchange.domain import Actor
from exchange.errors import NotFound
from exchange.service.context import ServiceContext
from exchange.service.ledger import consistency_from, head_or_404, inclusion_in

#: The ledger entry types that make or end a key; the client's check replays exactly these.
KEY_EVENT_TYPES = ("member.registered", "key.added", "key.revoked")

#: More key events than this for one member is not a real history; the answer says it was cut short.
_MAX_EVENTS = 1000


async def key_history(ctx: ServiceContext, actor: Actor, member_id: str, since: int | None) -> dict[str, Any]:
    """The member's key events inside the latest signed head, each with an inclusion proof.

    Events newer than that head are counted (``pending``), not shown: a client that needs one of
    them asks again once the next head is signed (heads follow within ``head_interval_ms``).
    """
    del actor  # any authenticated member may check any member's keys
    if await ctx.store.get_member(member_id) is None:
        raise NotFound("No such member.")
    head = await head_or_404(ctx, None)
    rows: list[tuple[int, bytes, bytes]] = []
    for event_type in KEY_EVENT_TYPES:
        rows += await ctx.store.search_ledger({"member": member_id, "type": event_type}, 0, _MAX_EVENTS)
    events: list[dict[str, Any]] = []
    pending = 0
    for seq, entry, _ in sorted(rows):
        details = json.loads(entry).get("details") or {}
        if details.get("member") != member_id:
            continue  # an event this member took part in as the actor, about someone else
        if seq >= head.size:
            pending += 1
            continue
        proved = await inclusion_in(ctx, seq, head)
        events.append({k: proved[k] for k in ("seq", "entry", "leaf_hash", "proof")})
    answer: dict[str, Any] = {
        "member": member_id,
        "events": events,
        "pending": pending,
        "head": head.to_json(),
        # The key that signs heads, for a client's first use (it pins the key and compares it afterwards).
        "server_key": crypto.b64encode(ctx.server_key.public_bytes),
    }
    if since is not None and since <= head.size:
        answer["consistency"] = await consistency_from(ctx, await head_or_404(ctx, since), head)
    return answer
