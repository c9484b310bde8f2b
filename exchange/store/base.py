"""The one storage interface the service talks to.

A backend offers reads on :class:`Store` and writes only inside :meth:`Store.write`, a single
serialised transaction. Every state change is made through a :class:`Transaction` together
with :meth:`Transaction.append_event`, so nothing happens unrecorded: the ledger entry and the
change commit or roll back together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from exchange.domain import (
    Agency,
    DeliveryRecord,
    DeliveryStatus,
    Member,
    MemberKey,
    PacketRecord,
    PacketStatus,
)
from exchange.ledger.heads import TreeHead


class Transaction(ABC):
    """Writes within one transaction. Reads here see the transaction's own changes."""

    # -- directory
    @abstractmethod
    async def insert_agency(self, agency: Agency) -> None: ...

    @abstractmethod
    async def set_agency_purposes(
        self, agency_id: str, send: frozenset[str] | None, receive: frozenset[str] | None
    ) -> None:
        """Replace the agency's purpose lists (None: no list, every purpose its kind allows)."""

    @abstractmethod
    async def insert_member(self, member: Member) -> None: ...

    @abstractmethod
    async def insert_key(self, key: MemberKey) -> None: ...

    @abstractmethod
    async def revoke_key(self, key_id: str, when: str) -> None: ...

    @abstractmethod
    async def remember_nonce(self, key_id: str, nonce: str, expires: str) -> bool:
        """Store a request nonce; return False if it was already used (a replay)."""

    @abstractmethod
    async def purge_nonces(self, before: str) -> None:
        """Forget nonces whose signatures can no longer be accepted anyway."""

    # -- packets
    @abstractmethod
    async def insert_packet(self, packet: PacketRecord) -> None: ...

    @abstractmethod
    async def set_packet_status(
        self, packet_id: str, status: PacketStatus, approval: Mapping[str, Any] | None = None
    ) -> None: ...

    @abstractmethod
    async def insert_delivery(self, delivery: DeliveryRecord) -> None: ...

    @abstractmethod
    async def update_delivery(
        self,
        packet_id: str,
        member_id: str,
        *,
        status: DeliveryStatus,
        delivered_at: str | None = None,
        opened_at: str | None = None,
        acknowledged_at: str | None = None,
        ack_signature: bytes | None = None,
    ) -> None: ...

    @abstractmethod
    async def get_delivery(self, packet_id: str, member_id: str) -> DeliveryRecord | None: ...

    # -- ledger
    @abstractmethod
    async def append_event(self, build_entry: Callable[[int], bytes]) -> tuple[int, bytes, bytes]:
        """Append one ledger entry; return ``(seq, entry_bytes, leaf_hash)``.

        ``build_entry`` receives the next sequence number and returns the entry's exact bytes.
        """

    @abstractmethod
    async def insert_tree_head(self, head: TreeHead) -> None:
        """Store a signed tree head (heads are append-only; one per size)."""


class Store(ABC):
    """Reads, plus :meth:`write` for a serialised transaction."""

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[Transaction]:
        """One serialised write transaction, committed on normal exit, rolled back on error."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`exchange.errors.StoreUnavailable` if the store cannot be reached."""

    # -- directory
    @abstractmethod
    async def get_agency(self, agency_id: str) -> Agency | None: ...

    @abstractmethod
    async def list_agencies(self) -> list[Agency]: ...

    @abstractmethod
    async def get_member(self, member_id: str) -> Member | None: ...

    @abstractmethod
    async def list_members(self, agency_id: str | None = None) -> list[Member]: ...

    @abstractmethod
    async def get_key(self, key_id: str) -> MemberKey | None: ...

    @abstractmethod
    async def member_keys(self, member_id: str) -> list[MemberKey]: ...

    @abstractmethod
    async def count_members(self) -> int: ...

    # -- packets
    @abstractmethod
    async def get_packet(self, packet_id: str) -> PacketRecord | None: ...

    @abstractmethod
    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]: ...

    @abstractmethod
    async def inbox(self, member_id: str, limit: int) -> list[tuple[PacketRecord, DeliveryRecord]]: ...

    @abstractmethod
    async def outbox(self, member_id: str, limit: int) -> list[PacketRecord]: ...

    @abstractmethod
    async def packets_awaiting_approval(self, agency_id: str, limit: int) -> list[PacketRecord]:
        """Packets of the agency held for approval, or delivered at once (imminent harm) with approval owed."""

    # -- ledger
    @abstractmethod
    async def ledger_size(self) -> int: ...

    @abstractmethod
    async def ledger_entries(self, start: int, stop: int) -> list[tuple[int, bytes, bytes]]:
        """Entries with ``start <= seq < stop`` as ``(seq, entry_bytes, leaf_hash)``."""

    @abstractmethod
    async def search_ledger(self, filters: Mapping[str, str], start: int, limit: int) -> list[tuple[int, bytes, bytes]]:
        """Entries from ``seq >= start`` matching every filter (type, packet, member, agency, and the
        RFC 3339 bounds since <= time < until), in order, at most ``limit``; uses the index, no scan."""

    @abstractmethod
    def iter_ledger(
        self, start: int = 0, stop: int | None = None, batch: int = 5000
    ) -> AsyncIterator[tuple[int, bytes, bytes]]:
        """Entries ``start <= seq < stop`` in order, read in batches."""

    @abstractmethod
    async def latest_tree_head(self) -> TreeHead | None: ...

    @abstractmethod
    async def tree_head(self, size: int) -> TreeHead | None: ...

    @abstractmethod
    async def tree_heads(self, start_size: int = 0, limit: int | None = None) -> list[TreeHead]:
        """Signed heads with ``size >= start_size`` in increasing size."""

    @abstractmethod
    async def ledger_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored perfect-subtree hashes by ``(level, index)``; missing keys are absent."""
