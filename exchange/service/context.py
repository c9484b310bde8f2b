"""What every use case needs, passed explicitly: store, configuration, record, clock and keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from exchange import crypto
from exchange.config import Config
from exchange.domain import Event, LedgerReceipt, iso, utc_now
from exchange.policy import Catalogue
from exchange.record import Record
from exchange.store import Store, Transaction

if TYPE_CHECKING:
    from exchange.service.deadlines import DeadlineWorker
    from exchange.service.ledger import HeadSigner


@dataclass
class Change:
    """One state change in progress: its transaction and the events it records."""

    tx: Transaction
    now: datetime
    receipts: list[tuple[Event, LedgerReceipt]] = field(default_factory=list)

    async def record(self, event: Event) -> LedgerReceipt:
        """Append ``event`` to the ledger inside this change's transaction."""
        time = iso(self.now)
        seq, entry, leaf = await self.tx.append_event(lambda seq: crypto.canonical_json(event.entry(seq, time)))
        receipt = LedgerReceipt(seq, leaf, entry)
        self.receipts.append((event, receipt))
        return receipt


@dataclass
class ServiceContext:
    store: Store
    config: Config
    record: Record
    server_key: crypto.SigningKey
    catalogue: Catalogue
    clock: Callable[[], datetime] = utc_now
    #: Set whenever the ledger grows, so the tree-head signer can wake up.
    ledger_grew: asyncio.Event = field(default_factory=asyncio.Event)
    #: The background tree-head signer, when a server runs one (offline commands do not).
    head_signer: HeadSigner | None = None
    #: The background deadline worker, when a server runs one.
    deadlines: DeadlineWorker | None = None

    @asynccontextmanager
    async def change(self) -> AsyncIterator[Change]:
        """A serialised transaction whose recorded events are logged once it has committed."""
        now = self.clock()
        async with self.store.write() as tx:
            change = Change(tx, now)
            yield change
        for event, receipt in change.receipts:
            self.record.log.info(
                event.type,
                seq=receipt.seq,
                leaf_hash=receipt.leaf_hash.hex(),
                ledger_entry=crypto.b64encode(receipt.entry),
                packet=event.packet,
                actor_member=event.actor_member,
                actor_agency=event.actor_agency,
            )
        if change.receipts:
            self.ledger_grew.set()
