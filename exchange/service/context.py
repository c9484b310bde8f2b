"""What every use case needs, passed explicitly: store, configuration, record, clock and keys.

A change (:meth:`ServiceContext.change`) is one serialised write transaction. Its ledger lines go
to the record log, written and fsync'd, *before* it commits, then a ``ledger.committed`` line after
(the order and why it is crash-consistent: ``exchange.record``). If the record log or the store
cannot be written the change is rolled back and refused with :class:`~exchange.errors.ReadOnly`
(503 with ``Retry-After``), and the exchange is read-only (:class:`WriteGate`): reads go on, each
change is refused at once until ``Retry-After`` has passed since the last failure, then the next
one tries again (for the record log by first probing it with one durable line), and the first that
succeeds ends the read-only state. ``/health`` says ``read_only`` and why meanwhile, and probes the
record log itself when a probe is due, so it recovers without waiting for a write. A change that
has committed is reported as committed: nothing after the commit can fail it.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from exchange import crypto
from exchange.config import Config
from exchange.domain import Event, LedgerReceipt, iso, new_id, utc_now
from exchange.errors import ReadOnly
from exchange.ledger import append as ledger_append
from exchange.ledger.append import Appended
from exchange.ledger.tree import NodeKey
from exchange.policy import Catalogue
from exchange.record import COMMITTED_EVENT, ROLLED_BACK_EVENT, Record
from exchange.service import nonces
from exchange.store import Store, Transaction

if TYPE_CHECKING:
    from exchange.service.deadlines import DeadlineWorker
    from exchange.service.ledger import HeadSigner


class PendingReceipt:
    """Where a recorded event lands in the ledger, known once its change has appended it.

    A change appends its events at its end, just before it commits (see :meth:`Change.append_recorded`),
    so the ledger's lock is held for the appends and the commit only, not for the whole change: on a
    store shared by several instances the lock is what every change waits for. Read it after the change.
    """

    __slots__ = ("_landed",)

    def __init__(self) -> None:
        self._landed: LedgerReceipt | None = None

    @property
    def landed(self) -> LedgerReceipt:
        if self._landed is None:
            raise RuntimeError("A ledger receipt is known only once its change has appended its events.")
        return self._landed

    @property
    def seq(self) -> int:
        return self.landed.seq

    @property
    def leaf_hash(self) -> bytes:
        return self.landed.leaf_hash

    @property
    def entry(self) -> bytes:
        return self.landed.entry


@dataclass(frozen=True)
class Frontier:
    """The ledger's right edge (:func:`exchange.ledger.append.frontier_keys`) at ``size`` entries.

    Committed entries never change, so the frontier an instance committed at ``size`` is the ledger's
    for as long as the ledger has ``size`` entries, whichever instance appends next: a change whose
    lock gives it that size starts from it instead of reading it (one round trip less under the lock).
    """

    size: int = -1
    nodes: Mapping[NodeKey, bytes] = field(default_factory=dict)


@dataclass
class FrontierMemo:
    """The latest frontier this instance committed (:attr:`current`), kept by the service context."""

    current: Frontier = field(default_factory=Frontier)

    def committed(self, frontier: Frontier | None) -> None:
        """Remember ``frontier``, once the change that made it has committed, if it is the newest."""
        if frontier is not None and frontier.size > self.current.size:
            self.current = frontier


@dataclass
class Change:
    """One state change in progress: its transaction and the events it records."""

    tx: Transaction
    now: datetime
    #: The instance's latest committed frontier, read when this change appends; and the one it leaves.
    memo: FrontierMemo = field(default_factory=FrontierMemo)
    frontier_after: Frontier | None = None
    #: The events appended to the ledger, with where they landed (after :meth:`append_recorded`).
    receipts: list[tuple[Event, LedgerReceipt]] = field(default_factory=list)
    #: Names this change in the record log: its ledger lines and its ``ledger.committed`` line.
    txn: str = field(default_factory=lambda: secrets.token_hex(8))
    _recorded: list[tuple[Event, PendingReceipt]] = field(default_factory=list)

    async def record(self, event: Event) -> PendingReceipt:
        """Record ``event`` in the ledger as part of this change: appended, in order, when the change ends."""
        pending = PendingReceipt()
        self._recorded.append((event, pending))
        return pending

    async def append_recorded(self) -> None:
        """Append the events recorded so far, in order, inside this change's transaction (the ledger lock is
        taken here and held until the commit)."""
        if not self._recorded:
            return
        time = iso(self.now)
        builds = [partial(_entry, event, time) for event, _ in self._recorded]
        appended, self.frontier_after = await append_batch(self.tx, builds, self.memo.current)
        for (event, pending), row in zip(self._recorded, appended, strict=True):
            pending._landed = LedgerReceipt(row.seq, row.leaf_hash, row.entry)
            self.receipts.append((event, pending._landed))
        self._recorded.clear()


def _entry(event: Event, time: str, seq: int) -> dict[str, Any]:
    return event.entry(seq, time)


async def append_to_ledger(tx: Transaction, builds: Sequence[Callable[[int], Mapping[str, Any]]]) -> list[Appended]:
    """Append the entries ``build(seq)``, in order, inside ``tx``; the rows stored, one per build."""
    return (await append_batch(tx, builds))[0]


async def append_batch(
    tx: Transaction, builds: Sequence[Callable[[int], Mapping[str, Any]]], known: Frontier | None = None
) -> tuple[list[Appended], Frontier]:
    """:func:`append_to_ledger`, and the frontier the batch leaves (to remember once ``tx`` has committed).

    The backend locks the ledger and stores the rows in one batch; :mod:`exchange.ledger.append`
    computes them, each next entry's frontier from the one before. The first frontier is ``known`` if
    the lock finds the ledger at its size, else read from the store.
    """
    seq = await tx.lock_ledger()
    if known is not None and known.size == seq:
        nodes = dict(known.nodes)
    else:
        nodes = await tx.ledger_frontier(ledger_append.frontier_keys(seq))
    appended: list[Appended] = []
    for build in builds:
        row = ledger_append.append(seq, build(seq), nodes)
        nodes.update(((level, index), digest) for level, index, digest in row.nodes)
        appended.append(row)
        seq += 1
    await tx.store_ledger_entries(appended)
    return appended, Frontier(seq, {key: nodes[key] for key in ledger_append.frontier_keys(seq)})


class WriteGate:
    """Whether changes may be attempted: the read-only state after the record log or the store failed."""

    def __init__(self, record: Record, retry_seconds: float) -> None:
        self.record = record
        self.retry_seconds = retry_seconds
        self.store_error: ReadOnly | None = None
        self.store_since: str | None = None
        self._next_attempt = 0.0

    def error(self) -> ReadOnly | None:
        """The error a change gets now, or None when the exchange is writable as far as it knows."""
        if self.record.fault is not None:
            return self.record.fault.error(max(1, math.ceil(self.retry_seconds)))
        return self.store_error

    def refuse_early(self) -> None:
        """Refuse at once (without waiting for the write lock) while read-only and no retry is due."""
        error = self.error()
        if error is not None and time.monotonic() < self._next_attempt:
            raise error

    async def before_change(self) -> None:
        """Inside the write lock: if the record log failed, probe it before doing any work."""
        if self.record.fault is not None:
            try:
                await self.record.probe()
            except ReadOnly as error:
                self.failed(error)
                raise

    async def recheck(self) -> None:
        """For ``/health``: probe a failed record log when an attempt is due (never more often)."""
        if self.record.fault is not None and time.monotonic() >= self._next_attempt:
            try:
                await self.record.probe()
            except ReadOnly as error:
                self.failed(error)

    def failed(self, error: ReadOnly) -> None:
        error.retry_after = max(1, math.ceil(self.retry_seconds))
        if error.extras.get("cause") == "store":
            if self.store_error is None or self.store_error.code != error.code:
                self.store_since = iso(utc_now())
            self.store_error = error
        self._next_attempt = time.monotonic() + self.retry_seconds

    def succeeded(self) -> None:
        self.store_error = None
        self.store_since = None

    def health(self) -> dict[str, object] | None:
        """Why the exchange is read-only, for ``/health``; None when it is not."""
        if self.record.fault is not None:
            return {"cause": "record_log", **self.record.fault.as_json()}
        if self.store_error is not None:
            return {"cause": "store", "code": self.store_error.code, "since": self.store_since}
        return None


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
    #: This server instance's name on the leases in the store (random: two instances never share one).
    instance_id: str = field(default_factory=lambda: new_id("inst"))
    #: The read-only state (see the module documentation).
    writes: WriteGate = field(init=False)
    #: The ledger's frontier as this instance last committed it.
    frontier: FrontierMemo = field(default_factory=FrontierMemo)

    def __post_init__(self) -> None:
        self.writes = WriteGate(self.record, self.config.read_only_retry_seconds)

    @asynccontextmanager
    async def change(self) -> AsyncIterator[Change]:
        """A serialised transaction whose ledger lines are logged and synced before it commits.

        Raises :class:`~exchange.errors.ReadOnly` (the change rolled back) when the record log or
        the store cannot be written; see the module documentation.
        """
        self.writes.refuse_early()
        now = self.clock()
        logged: Change | None = None
        tx: Transaction | None = None
        try:
            async with self.store.write() as tx:
                await self.writes.before_change()
                change = Change(tx, now, self.frontier)
                nonce = await nonces.store_pending(tx)
                yield change
                await change.append_recorded()
                if change.receipts:
                    # Appended now, synced once before the commit that makes the change durable (shared by
                    # every change committed with it): the record never lacks a committed entry.
                    self.record.append([_ledger_line(change.txn, *item) for item in change.receipts])
                    tx.before_commit(self.record.sync)
                    logged = change
        except BaseException as error:
            if isinstance(error, ReadOnly):
                self.writes.failed(error)
            if logged is not None and tx is not None and tx.committed:
                # Committed, and only then was this caller cancelled: the record says what happened.
                self.record.mark(COMMITTED_EVENT, txn=logged.txn, **_seqs(logged))
                self.ledger_grew.set()
            elif logged is not None:  # written, then not committed: say so (best effort; see exchange.record)
                self.record.mark(ROLLED_BACK_EVENT, txn=logged.txn, **_seqs(logged))
            raise
        self.writes.succeeded()
        self.frontier.committed(change.frontier_after)
        if nonce is not None:
            nonce.stored = True
        if change.receipts:
            self.record.mark(COMMITTED_EVENT, txn=change.txn, **_seqs(change))
            self.ledger_grew.set()


def _ledger_line(txn: str, event: Event, receipt: LedgerReceipt) -> tuple[str, dict[str, object]]:
    return event.type, {
        "seq": receipt.seq,
        "leaf_hash": receipt.leaf_hash.hex(),
        "ledger_entry": crypto.b64encode(receipt.entry),
        "packet": event.packet,
        "actor_member": event.actor_member,
        "actor_agency": event.actor_agency,
        "txn": txn,
    }


def _seqs(change: Change) -> dict[str, int]:
    seqs = [receipt.seq for _, receipt in change.receipts]
    return {"first_seq": min(seqs), "last_seq": max(seqs)}
