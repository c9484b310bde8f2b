"""The world the authorization matrix is tried in: one live server, a client per party, the resources.

The demo directory plus a practitioner registered in each of the school and children's social care
plays the parties of :mod:`exchange.web.authorization` (see ``PLAYED_BY``). The world also reads the
store directly, read-only: to fingerprint it (what a refused call must leave as it was) and to see a
packet's or a copy's state after an allowed call.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Awaitable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
from yarl import URL

from exchange import crypto, httpsig
from exchange.client import ApiError, ExchangeClient
from exchange.domain import utc_now
from exchange.examples import REFERRAL, imminent_harm, referral, referral_without_consent
from exchange.keyfile import MemberCredentials
from exchange.service.deadlines import DeadlineWorker
from exchange.web.authorization import MEMBERS, Outcome, rules_for
from exchange.web.keys import CONTEXT
from tests.conftest import Deployment, start_deployment

#: Who plays each member party: a demo member's label, or one of ``REGISTERED``.
PLAYED_BY = {
    "sender": "school-dsl",
    "sender_colleague": "school-teacher",
    "sender_manager": "school-head",
    "sender_admin": "school-admin",
    "recipient": "csc-duty",
    "non_recipient": "csc-worker",
    "other_manager": "csc-manager",
    "other_practitioner": "police-officer",
    "other_admin": "csc-admin",
    "auditor": "auditor",
}
#: Practitioners the matrix registers (label: the admin who registers them), so no column shares a member.
REGISTERED = {"school-teacher": "school-admin", "csc-worker": "csc-admin"}

#: Bookkeeping a refused request may leave: its nonce, a head signed in the background, the worker's lease.
BOOKKEEPING_TABLES = frozenset({"request_nonces", "tree_heads", "leases"})


@dataclass(frozen=True)
class Sent:
    """A packet the sender sent, and its manifest digest (what acknowledgements and reports sign over)."""

    packet_id: str
    digest: str


@dataclass(frozen=True)
class Answer:
    """What the server said: a status (None for an SDK call that succeeded: some 2xx) and the body."""

    ok: bool
    status: int | None
    body: Any

    def shows(self) -> str:
        if self.ok:
            return "2xx"
        code = self.body.get("code") if isinstance(self.body, dict) else None
        return f"{self.status} {code}"


@dataclass
class World:
    """The running server, each member party's open client and credentials, and the shared resources."""

    deployment: Deployment
    clients: dict[str, ExchangeClient]
    creds: dict[str, MemberCredentials]
    session: aiohttp.ClientSession
    packet: Sent = Sent("", "")
    held: Sent = Sent("", "")
    request_id: str = ""
    decision_id: str = ""
    escalation: str = ""
    escalation_pool: list[str] = field(default_factory=list)
    delivered_seq: int = 0
    pseudonym: str = ""
    early_head: int = 0

    def client(self, party: str) -> ExchangeClient:
        return self.clients[party]

    def id(self, party: str) -> str:
        member = self.creds[party].member_id
        assert member is not None
        return member

    def agency(self, party: str) -> str:
        agency = self.creds[party].agency_id
        assert agency is not None
        return agency

    # ------------------------------------------------------------------ calls

    async def attempt(self, call: Awaitable[Any]) -> Answer:
        try:
            return Answer(True, None, await call)
        except ApiError as error:
            return Answer(False, error.http_status, error.problem)

    async def raw(self, method: str, path: str, *, key: crypto.SigningKey | None) -> Answer:
        """A request signed with ``key`` (or not signed at all), with a JSON ``{}`` body on a POST."""
        url = str(URL(self.deployment.url + path))
        body = b"{}" if method == "POST" else b""
        headers = {"Content-Type": "application/json"} if body else {}
        if key is not None:
            headers |= httpsig.sign_request(method, url, body, key, now=utc_now())
        async with self.session.request(method, url, data=body or None, headers=headers) as response:
            raw = await response.read()
            payload = json.loads(raw) if raw and response.content_type.endswith("json") else None
            return Answer(response.status < 400, response.status, payload)

    # ------------------------------------------------------------------ the store, read directly

    def fingerprint(self) -> str:
        """A digest of everything the store holds but bookkeeping: what a refused request must leave as it was."""
        db = sqlite3.connect(f"file:{self.deployment.config.database_path}?mode=ro", uri=True)
        try:
            digest = hashlib.sha256()
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
            for table in tables:
                if table in BOOKKEEPING_TABLES:
                    continue
                digest.update(table.encode())
                for row in db.execute(f'SELECT * FROM "{table}"'):  # noqa: S608 - table names from the schema
                    digest.update(repr(row).encode())
            return digest.hexdigest()
        finally:
            db.close()

    def delivery_state(self, packet_id: str, party: str) -> str:
        db = sqlite3.connect(f"file:{self.deployment.config.database_path}?mode=ro", uri=True)
        try:
            row = db.execute(
                "SELECT status FROM deliveries WHERE packet_id = ? AND recipient_member = ?",
                (packet_id, self.id(party)),
            ).fetchone()
        finally:
            db.close()
        return str(row[0]) if row else "none"

    def packet_state(self, packet_id: str) -> str:
        db = sqlite3.connect(f"file:{self.deployment.config.database_path}?mode=ro", uri=True)
        try:
            (state,) = db.execute("SELECT status FROM packets WHERE id = ?", (packet_id,)).fetchone()
        finally:
            db.close()
        return str(state)

    # ------------------------------------------------------------------ fresh resources

    async def send(self, packet_file: dict[str, Any]) -> Sent:
        sender = self.client("sender")
        sealed = await sender.prepare(packet_file)
        await sender.submit(sealed)
        return Sent(sealed.manifest["packet_id"], sealed.manifest_digest)

    async def delivered(self) -> Sent:
        return await self.send(referral([self.id("recipient")]))

    async def acknowledged(self) -> Sent:
        sent = await self.delivered()
        await self.client("recipient").acknowledge(sent.packet_id)
        return sent

    async def reported(self) -> tuple[Sent, str]:
        sent = await self.acknowledged()
        reported = await self.client("recipient").report(sent.packet_id, "child_in_need_assessment_s17")
        return sent, str(reported["statement_id"])

    async def awaiting_approval(self) -> Sent:
        return await self.send(referral_without_consent([self.id("recipient")]))

    async def open_request(self) -> dict[str, Any]:
        """The sender asks the recipient (by name) what they know, for a strategy discussion."""
        document = await self.client("sender").prepare_request(
            {
                "purpose": "strategy_discussion",
                "from": self.id("recipient"),
                "urgency": "urgent",
                "lawful_basis": {"article6": "public_task", "legal_power": ["children_act_1989_s47"]},
                "fields": ["household_members", "action_taken"],
                "subject_identifier": REFERRAL["subject_identifier"],
                "details": {"child_name": "Jamie Example", "why": "A strategy discussion is convened tomorrow."},
            }
        )
        await self.client("sender").request("POST", "/v1/requests", document)
        return dict(document["request"])

    async def sender_key(self) -> str:
        """A new current signing key of the sender's (never the one their requests are signed with)."""
        added = await self.client("sender").add_signing_key(crypto.SigningKey.generate())
        return str(added["key_id"])

    async def fresh_escalation(self) -> str:
        return self.escalation_pool.pop()

    async def record_decision(self, party: str) -> Any:
        return await self.client(party).decide_not_to_share(
            purpose="referral_to_childrens_social_care",
            fields_considered=["child_name", "concern_description"],
            reason_codes=["not_necessary_or_proportionate"],
            reasons="One unexplained absence; we will monitor and speak to the parent.",
        )


async def build_world(root: Path, stack: AsyncExitStack) -> World:
    """Start a server with the demo directory, register the two extra practitioners, open a client for each
    member party, and make the resources the read rules look at (the mutating rules make their own)."""
    deployment, close = await start_deployment(
        root, rate_limit_per_minute=1_000_000, deadline_check_seconds=3600.0, max_concurrent_requests=1024
    )
    stack.push_async_callback(close)
    session = await stack.enter_async_context(aiohttp.ClientSession())
    creds = {party: deployment.credentials(label) for party, label in PLAYED_BY.items() if label not in REGISTERED}
    linkage = bytes.fromhex((deployment.key_dir / "linkage.key").read_text().strip())
    clients: dict[str, ExchangeClient] = {}

    async def connect(party: str) -> None:
        clients[party] = await stack.enter_async_context(
            ExchangeClient(deployment.url, creds[party], linkage_key=linkage)
        )

    for party in creds:
        await connect(party)
    by_label = {label: party for party, label in PLAYED_BY.items()}
    for label, admin in REGISTERED.items():
        party, new = by_label[label], MemberCredentials.generate()
        admin_client = clients[by_label[admin]]
        agency = creds[by_label[admin]].agency_id
        assert agency is not None
        registered = await admin_client.register_member(agency, label, ["practitioner"], new)
        creds[party] = new.registered(registered["id"], agency, deployment.url, label)
        await connect(party)
    w = World(deployment, clients, creds, session)

    # Overdue acknowledgements first (imminent harm: acknowledged within the hour), then the clock
    # moves on past them once; everything else is made after, on the moved clock.
    (acknowledging,) = rules_for("POST", "/v1/escalations/{escalation_id}/acknowledgement")
    needed = sum(acknowledging.outcome(party) is Outcome.ALLOW for party in MEMBERS)
    tomorrow = (utc_now() + timedelta(days=1)).date().isoformat()
    overdue = [await w.send(imminent_harm([w.id("recipient")], tomorrow)) for _ in range(needed + 1)]
    deployment.clock.offset_seconds += 61 * 60
    worker = deployment.server.app[CONTEXT].deadlines
    assert isinstance(worker, DeadlineWorker)
    while (await worker.run_once()).more:
        pass
    listed = await clients["sender"].every("/v1/escalations", "escalations")
    ack = {e["packet_id"]: e["escalation_id"] for e in listed if e["kind"] == "ack"}
    pool = [ack[sent.packet_id] for sent in overdue]
    w.escalation, w.escalation_pool = pool[0], pool[1:]

    w.early_head = (await clients["auditor"].request("GET", "/v1/ledger/head"))["head"]["size"]
    w.packet = await w.send(referral([w.id("recipient")]))
    w.held = await w.awaiting_approval()
    w.request_id = (await w.open_request())["request_id"]
    w.decision_id = (await w.record_decision("sender"))["decision_id"]
    w.pseudonym = clients["sender"].pseudonym_of(REFERRAL["subject_identifier"])
    found = await clients["auditor"].request(
        "GET", f"/v1/ledger/entries?packet={w.packet.packet_id}&type=packet.delivered"
    )
    w.delivered_seq = found["entries"][0]["seq"]
    # Receipts and proofs need the entries inside a signed head.
    signer = deployment.server.app[CONTEXT].head_signer
    assert signer is not None
    await signer.sign_now()
    return w


