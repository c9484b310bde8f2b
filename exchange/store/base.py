"""The one storage interface the service talks to.

A backend offers reads on :class:`Store` and writes only inside :meth:`Store.write`, a single
serialised transaction. Every state change is made through a :class:`Transaction` together
with its ledger entry (:meth:`Transaction.store_ledger_entry`), so nothing happens unrecorded: the ledger entry and the
change commit or roll back together.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

from exchange.domain import (
    Agency,
    DeliveryRecord,
    Escalation,
    InfoRequest,
    LoopStatement,
    Member,
    MemberKey,
    Obligation,
    PacketRecord,
    Page,
    RequestDecline,
    Role,
    ShareDecision,
)
from exchange.ledger.append import Appended
from exchange.ledger.heads import TreeHead
from exchange.lifecycle import ApprovalState, DeliveryState, PacketState, RequestState

#: Which side of a request a listing shows: the member's own, those they hold, or both.
RequestRole = Literal["sent", "received", "all"]


class Transaction(ABC):
    """Writes within one transaction. Reads here see the transaction's own changes."""

    #: Set once the change is durable. A caller cancelled after its change's body learns the outcome
    #: here: the change may have committed with others although the caller got CancelledError.
    committed: bool = False

    @abstractmethod
    def before_commit(self, action: Callable[[], Awaitable[None]]) -> None:
        """Run ``action`` just before this change commits (once, however many changes commit together and
        register it); if it raises, nothing commits and every change that would have fails with its error."""

    # -- directory
    @abstractmethod
    async def insert_agency(self, agency: Agency) -> None:
        """Store a new agency as given (its id is new: ids are generated, never reused)."""

    @abstractmethod
    async def set_agency_purposes(
        self, agency_id: str, send: frozenset[str] | None, receive: frozenset[str] | None
    ) -> None:
        """Replace the agency's purpose lists (None: no list, every purpose its kind allows)."""

    @abstractmethod
    async def insert_member(self, member: Member) -> None:
        """Store a new member of an existing agency, active, with the roles given."""

    @abstractmethod
    async def insert_key(self, key: MemberKey) -> None:
        """Store a new key; :class:`exchange.errors.KeyInUse` if its id (its fingerprint) is registered already."""

    @abstractmethod
    async def revoke_key(self, key_id: str, when: str) -> None:
        """Mark the key revoked as of ``when`` (ISO 8601); a key already revoked keeps its first time."""

    @abstractmethod
    async def remember_nonce(self, key_id: str, nonce: str, expires: str) -> bool:
        """Store a request nonce; return False if it was already used (a replay)."""

    @abstractmethod
    async def purge_nonces(self, before: str) -> None:
        """Forget nonces whose signatures can no longer be accepted anyway."""

    # -- packets: every state change is a compare-and-set on the state the service read, in this
    # transaction; a row whose state has moved on raises StateChanged (409), so one of two racing
    # transitions wins and the other changes nothing.
    @abstractmethod
    async def insert_packet(self, packet: PacketRecord) -> None:
        """Store a submitted packet; :class:`exchange.errors.Conflict` if its id (or manifest) was submitted before."""

    @abstractmethod
    async def get_packet(self, packet_id: str) -> PacketRecord | None:
        """The packet as this transaction sees it (read under the write lock)."""

    @abstractmethod
    async def set_packet_state(
        self,
        packet_id: str,
        expected: PacketState,
        new: PacketState,
        *,
        superseded_by: str | None = None,
        corrected_fields: Sequence[str] | None = None,
    ) -> None:
        """Compare-and-set the packet's state; ``superseded_by`` and ``corrected_fields`` (the names of
        its fields a correction put right) are set with it when given."""

    @abstractmethod
    async def set_approval_state(
        self, packet_id: str, expected: ApprovalState, new: ApprovalState, approval: Mapping[str, Any] | None
    ) -> None:
        """Compare-and-set the packet's approval state from ``expected`` to ``new`` (StateChanged if it moved
        on), storing the signed ``approval`` document with it when given."""

    @abstractmethod
    async def set_packet_dues(self, packet_id: str, ack_due: str | None, action_due: str | None) -> None:
        """Record when a packet held for approval must be acknowledged and actioned, now it is delivered."""

    @abstractmethod
    async def remove_content(self, packet_id: str, when: str) -> None:
        """Delete the sealed body and every sealed key of the packet; its record and manifest stay."""

    @abstractmethod
    async def remove_sealed_key(self, packet_id: str, member_id: str) -> None:
        """Delete one recipient's sealed key (a copy that can no longer be opened); the record stays."""

    @abstractmethod
    async def insert_delivery(self, delivery: DeliveryRecord) -> None:
        """Store one recipient's copy of a packet stored in this transaction or before."""

    @abstractmethod
    async def get_delivery(self, packet_id: str, member_id: str) -> DeliveryRecord | None:
        """One recipient's copy of the packet as this transaction sees it, or None."""

    @abstractmethod
    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]:
        """Every copy of the packet as this transaction sees it, by recipient member id."""

    @abstractmethod
    async def set_delivery_state(
        self,
        packet_id: str,
        member_id: str,
        expected: DeliveryState,
        new: DeliveryState,
        *,
        when: str,
        times: Mapping[str, str] | None = None,
        ack_signature: bytes | None = None,
        ack_key: str | None = None,
    ) -> None:
        """Move one recipient's copy from ``expected`` to ``new``; ``times`` sets columns named in
        :data:`exchange.domain.DELIVERY_TIMES`."""

    @abstractmethod
    async def insert_statement(self, statement: LoopStatement) -> None:
        """Store one signed loop statement (a report, confirmation, query or reply) as given."""

    @abstractmethod
    async def statements_for(self, packet_id: str, recipient_member: str) -> list[LoopStatement]:
        """One recipient's loop statements as this transaction sees them (the chain is checked under the lock)."""

    # -- information requests and decisions not to share
    @abstractmethod
    async def insert_request(self, request: InfoRequest) -> None:
        """Store a new (open) request; raises :class:`exchange.errors.Conflict` if its id or digest exists."""

    @abstractmethod
    async def get_request(self, request_id: str) -> InfoRequest | None:
        """The request as this transaction sees it (read under the write lock)."""

    @abstractmethod
    async def set_request_state(
        self,
        request_id: str,
        expected: RequestState,
        new: RequestState,
        *,
        when: str,
        answered_by: str | None = None,
        decline: RequestDecline | None = None,
    ) -> None:
        """Compare-and-set the request's state; records the answering packet or the decline with it."""

    @abstractmethod
    async def insert_share_decision(self, decision: ShareDecision) -> None:
        """Store a recorded decision not to share; :class:`exchange.errors.Conflict` if its id exists."""

    # -- deadlines
    @abstractmethod
    async def add_obligation(self, obligation: Obligation) -> None:
        """Store an obligation; one with the same id already stored is left as it is."""

    @abstractmethod
    async def settle_obligations(
        self,
        kinds: Sequence[str],
        *,
        packet_id: str | None = None,
        request_id: str | None = None,
        owed_by_member: str | None = None,
        state: str,
        when: str,
    ) -> list[str]:
        """Mark the open obligations matching every given key ``met`` or ``cancelled``; resolve their
        escalations. Returns the ids settled."""

    @abstractmethod
    async def due_obligations(self, now: str, limit: int) -> list[Obligation]:
        """Open obligations due at or before ``now``, oldest first (uses the (state, due) index)."""

    @abstractmethod
    async def fire_obligation(self, obligation_id: str, when: str) -> bool:
        """Compare-and-set ``open`` → ``fired``; False if it was no longer open."""

    @abstractmethod
    async def get_obligation(self, obligation_id: str) -> Obligation | None:
        """The obligation as this transaction sees it (the deadline worker re-reads before acting)."""

    @abstractmethod
    async def settle_obligation(self, obligation_id: str, state: str, when: str) -> bool:
        """Compare-and-set one obligation ``open`` → ``met`` or ``cancelled``; False if it was no longer
        open. Unlike :meth:`settle_obligations`, an obligation that already fired is left as it is."""

    @abstractmethod
    async def info_request_state(self, request_id: str) -> str | None:
        """The state of an information request (``open``, ``answered``...), None if there is none."""

    @abstractmethod
    async def insert_escalation(self, escalation: Escalation) -> None:
        """Store an escalation raised for an obligation (at most one per obligation)."""

    @abstractmethod
    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        """The escalation as this transaction sees it, or None."""

    @abstractmethod
    async def acknowledge_escalation(self, escalation_id: str, member_id: str, when: str) -> bool:
        """Compare-and-set: record who acknowledged an escalation; False if already acknowledged."""

    @abstractmethod
    async def take_lease(self, name: str, holder: str, now: str, expires: str) -> bool:
        """Take or renew the named lease if it is free, expired, or already ``holder``'s."""

    @abstractmethod
    async def release_lease(self, name: str, holder: str) -> None:
        """Give up the named lease if ``holder`` has it, so another instance need not wait for it to lapse."""

    # -- ledger: the service computes what to store (exchange.ledger.append); a backend stores it
    @abstractmethod
    async def lock_ledger(self) -> int:
        """Take the ledger's append lock for the rest of this transaction; return the next sequence number.

        While one transaction holds the lock no other one, on any instance sharing the store, can
        append, so the sequence stays gap-free and every entry's frontier is the one it was computed
        on. The lock is released when the transaction commits or rolls back. Called again in the same
        transaction it returns the size including the entries appended since.
        """

    @abstractmethod
    async def ledger_frontier(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """The stored tree nodes ``(level, index)`` asked for, as this transaction sees them (its own
        appends included); a key with no node is left out."""

    @abstractmethod
    async def store_ledger_entries(self, appended: Sequence[Appended]) -> None:
        """Store entries exactly as given: their bytes and leaf hashes, their tree nodes, their index refs.

        The caller holds the ledger lock; the entries are consecutive, the first at the number
        :meth:`lock_ledger` gave. The backend computes nothing, and may store them in one round trip.
        Stored entries are never changed or deleted.
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
    async def close(self) -> None:
        """Release the store's connections; nothing may be called on it after."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise :class:`exchange.errors.StoreUnavailable` if the store cannot be reached."""

    # -- directory
    @abstractmethod
    async def get_agency(self, agency_id: str) -> Agency | None:
        """The agency, or None."""

    @abstractmethod
    async def list_agencies(self) -> list[Agency]:
        """Every agency, by name."""

    @abstractmethod
    async def get_member(self, member_id: str) -> Member | None:
        """The member, or None."""

    @abstractmethod
    async def list_members(self, agency_id: str | None = None) -> list[Member]:
        """Every member (of one agency when given), by agency then display name."""

    @abstractmethod
    async def get_key(self, key_id: str) -> MemberKey | None:
        """The key with this id (its fingerprint), revoked or not, or None."""

    @abstractmethod
    async def member_keys(self, member_id: str) -> list[MemberKey]:
        """Every key the member has had, revoked ones included, oldest first."""

    @abstractmethod
    async def count_members(self) -> int:
        """How many members the directory holds (0: a new deployment)."""

    @abstractmethod
    async def nonce_seen(self, key_id: str, nonce: str) -> bool:
        """Whether this request nonce was stored already: a read, so a replay is refused before its body
        is read. (:meth:`Transaction.remember_nonce` stays the deciding check, in the write.)"""

    # The directory as senders read it: paged by keyset in a stable order, filtered so a sender
    # fetches only the members it seals to (issue 8: the whole directory was fetched on every send).
    @abstractmethod
    async def directory_members(
        self,
        limit: int,
        after: Page | None = None,
        *,
        agency_id: str | None = None,
        member_ids: Sequence[str] | None = None,
        roles: frozenset[Role] | None = None,
    ) -> list[Member]:
        """Active members in registration order (``created``, then id) strictly after ``after``: only those
        in ``member_ids`` if given, only of ``agency_id`` if given, only those holding any of ``roles`` if given."""

    @abstractmethod
    async def keys_of_members(self, member_ids: Sequence[str]) -> dict[str, list[MemberKey]]:
        """Every key of each member, oldest first, in one read; a member without keys is absent."""

    @abstractmethod
    async def agencies_page(self, limit: int, after: Page | None = None) -> list[Agency]:
        """Agencies by name (then id) strictly after ``after`` (whose ``after_created`` holds the name)."""

    # -- packets. Listings are newest first and paged by keyset: ``after`` is the (created, id) of
    # the last row of the previous page.
    @abstractmethod
    async def get_packet(self, packet_id: str) -> PacketRecord | None:
        """The packet as last committed, or None."""

    @abstractmethod
    async def deliveries_for_packet(self, packet_id: str) -> list[DeliveryRecord]:
        """Every copy of the packet as last committed, by recipient member id."""

    @abstractmethod
    async def inbox(
        self, member_id: str, limit: int, after: Page | None, states: frozenset[DeliveryState]
    ) -> list[tuple[PacketRecord, DeliveryRecord]]:
        """The member's copies in ``states`` (the lifecycle says which a recipient may see), newest first
        (the packet's ``created``, then id), ``limit`` of them after the page cursor; never a copy recalled
        before it was delivered (no ``delivered_at``): that one never reached them."""

    @abstractmethod
    async def outbox(
        self, member_id: str, limit: int, after: Page | None = None, states: frozenset[PacketState] | None = None
    ) -> list[PacketRecord]:
        """Packets the member sent, newest first (``created``, then id), ``limit`` of them after the
        page cursor ``after``, optionally only in ``states``."""

    @abstractmethod
    async def packets_awaiting_approval(
        self, agency_id: str, limit: int, after: Page | None, states: frozenset[ApprovalState]
    ) -> list[PacketRecord]:
        """Packets sent from the agency whose approval state is in ``states``, newest first (``created``,
        then id), ``limit`` of them after the page cursor."""

    @abstractmethod
    async def statements_for(self, packet_id: str, recipient_member: str | None = None) -> list[LoopStatement]:
        """The loop statements of a packet (one recipient's, if given), oldest first."""

    @abstractmethod
    async def get_escalation(self, escalation_id: str) -> Escalation | None:
        """The escalation as last committed, or None."""

    @abstractmethod
    async def escalations(
        self,
        *,
        members: Sequence[str],
        agencies_as_sender: Sequence[str],
        agencies_as_owing: Sequence[str],
        limit: int,
        after: Page | None = None,
        open_only: bool = False,
    ) -> list[Escalation]:
        """Escalations owed to or by one of ``members``, or owed to one of ``agencies_as_sender``, or
        owed by one of ``agencies_as_owing``; newest first (paged by raised_at, id)."""

    @abstractmethod
    async def obligations_for(self, packet_id: str) -> list[Obligation]:
        """Every obligation about the packet, by due time then id."""

    @abstractmethod
    async def oldest_due_obligation(self, now: str) -> tuple[int, str | None]:
        """How many open obligations are due at ``now``, and the oldest due time among them."""

    @abstractmethod
    async def get_request(self, request_id: str) -> InfoRequest | None:
        """The information request as last committed, or None."""

    @abstractmethod
    async def requests_for(
        self,
        member_id: str,
        agency_id: str,
        *,
        role: RequestRole,
        limit: int,
        after: Page | None = None,
        states: frozenset[RequestState] | None = None,
    ) -> list[InfoRequest]:
        """Requests the member made (``sent``), or holds in ``agency_id`` (``received``: their details were
        sealed to the member), or both; optionally in ``states``; newest first, paged by (created, id)."""

    @abstractmethod
    async def share_decisions(
        self, *, member_id: str | None, agency_id: str | None, limit: int, after: Page | None = None
    ) -> list[ShareDecision]:
        """Decisions not to share made by ``member_id`` (or, if None, by anyone in ``agency_id``), newest first."""

    @abstractmethod
    async def packets_for_subject(self, pseudonym: str) -> list[PacketRecord]:
        """Every packet about the subject (a pseudonym), oldest first (``created``, then id)."""

    @abstractmethod
    async def subject_ledger(
        self, pseudonym: str, start: int, limit: int, stop: int | None = None
    ) -> list[tuple[int, bytes, bytes]]:
        """Ledger entries about a subject with ``start <= seq < stop``, in order, at most ``limit``.

        About it: indexed under the pseudonym, or about a packet whose manifest names it, or about
        an information request (or a decision not to share's request) recorded for it. Uses the
        indexes, never a scan.
        """

    # -- ledger
    @abstractmethod
    async def ledger_size(self) -> int:
        """How many entries the ledger holds (the next entry's sequence number), as last committed."""

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
    async def latest_tree_head(self) -> TreeHead | None:
        """The signed tree head of the largest size, or None before the first is signed."""

    @abstractmethod
    async def tree_head(self, size: int) -> TreeHead | None:
        """The signed tree head of exactly ``size`` entries, or None if none was signed at that size."""

    @abstractmethod
    async def tree_heads(self, start_size: int = 0, limit: int | None = None) -> list[TreeHead]:
        """Signed heads with ``size >= start_size`` in increasing size."""

    @abstractmethod
    async def ledger_nodes(self, keys: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        """Stored perfect-subtree hashes by ``(level, index)``; missing keys are absent."""
