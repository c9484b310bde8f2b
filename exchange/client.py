"""The Python SDK: signs every request (RFC 9421), seals and opens packets locally.

Integrators and the ``exchange`` CLI use the same :class:`ExchangeClient`. Private keys never
leave this process: the server receives public keys, ciphertext and signatures only.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote, urlencode

import aiohttp
from yarl import URL

from exchange import crypto, feedback, httpsig, identifiers, policy, schemas, statements
from exchange.domain import SHARING_ROLES, iso, new_id, utc_now
from exchange.errors import CryptoError, ExchangeError, InvalidRequest, NoCurrentKey
from exchange.keyfile import MemberCredentials
from exchange.ledger import TreeHead
from exchange.ledger.proofs import check_head_extends, check_inclusion_answer
from exchange.ledger.subject_export import SubjectExport, verify_subject_export
from exchange.transparency import KeyHistory, TrustState, check_key_history, check_sealing_key

#: Roles whose members receive a packet addressed to a whole agency ("agency:agy_...").
DUTY_ROLES = frozenset(role.value for role in SHARING_ROLES)
#: How long a sender waits for a just-registered recipient key to enter a signed tree head.
KEY_EVENT_WAIT_SECONDS = 5.0

#: Members named in one directory look-up (the server takes up to 100).
_LOOKUP_CHUNK = 100
#: What a member id looks like (schemas/manifest.v1.json, member_id).
_MEMBER_ID = re.compile(r"mem_[A-Za-z0-9]{8,64}")


class ApiError(ExchangeError):
    """The server answered with a problem (RFC 9457); ``problem`` holds it whole."""

    code = "api.error"

    def __init__(self, status: int, problem: Mapping[str, Any], *, retry_after: int | None = None) -> None:
        super().__init__(
            str(problem.get("detail") or problem.get("title") or f"HTTP {status}"), retry_after=retry_after
        )
        self.http_status = status
        self.problem = dict(problem)
        self.problem_code = str(problem.get("code", "unknown"))

    @classmethod
    def from_response(cls, response: aiohttp.ClientResponse, problem: Any) -> ApiError:
        """The error for a problem answer; ``retry_after`` comes from a whole-seconds Retry-After header."""
        wait = response.headers.get("Retry-After", "")
        return cls(
            response.status,
            problem if isinstance(problem, dict) else {},
            retry_after=int(wait) if wait.isdigit() else None,
        )


@dataclass(frozen=True)
class OpenedRequest:
    """A request whose signature was verified, with what this member could open of it."""

    request_id: str
    #: The signed request document (codes and ids only).
    request: dict[str, Any]
    state: str
    #: As a holder: the details sealed to you (the child's name, date of birth, why).
    details: dict[str, Any] | None
    #: As the requester, when declined: the decliner's explanation in words.
    explanation: str | None
    #: The server's whole answer (state, the decline's reason codes, answered_by...).
    fetched: dict[str, Any]


@dataclass(frozen=True)
class OpenedPacket:
    """A packet verified and decrypted on the recipient's side."""

    packet_id: str
    manifest: dict[str, Any]
    manifest_digest: str
    body: dict[str, Any]
    approval: dict[str, Any] | None
    #: Set when a correction replaced this packet: the correction's id and the fields that were wrong here.
    superseded_by: str | None = None
    corrected_fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class SkippedRecipient:
    """A duty member of an agency inbox that a packet or request was not sealed to, and why."""

    member: str
    agency: str
    display_name: str
    #: ``no_current_encryption_key``: their key was revoked or has expired, so they could not open it.
    reason: str

    @classmethod
    def without_key(cls, entry: Mapping[str, Any]) -> SkippedRecipient:
        return cls(entry["id"], entry["agency"], entry["display_name"], "no_current_encryption_key")

    def as_json(self) -> dict[str, str]:
        return {
            "member": self.member,
            "agency": self.agency,
            "display_name": self.display_name,
            "reason": self.reason,
            "detail": f"{self.display_name} has no current encryption key (revoked or expired), so was left out.",
        }


@dataclass(frozen=True)
class Resolution:
    """The recipients an address list names, and the agency inbox members left out of it."""

    recipients: tuple[crypto.Recipient, ...]
    skipped: tuple[SkippedRecipient, ...] = ()


@dataclass(frozen=True)
class PreparedPacket(crypto.SealedPacket):
    """A sealed packet with the agency inbox members it could not be sealed to (:meth:`ExchangeClient.submit`
    reports them to the sender as ``skipped``)."""

    skipped: tuple[SkippedRecipient, ...] = ()


def _encryption_keys(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A directory entry's current encryption keys, oldest first (the directory lists only current keys)."""
    return [k for k in entry.get("keys", ()) if k.get("use") == "encryption"]


class ExchangeClient:
    """An authenticated connection to one exchange server for one member."""

    def __init__(
        self,
        base_url: str,
        credentials: MemberCredentials,
        *,
        ssl_context: ssl.SSLContext | None = None,
        linkage_key: bytes | None = None,
        clock: Callable[[], datetime] = utc_now,
        trust: TrustState | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        #: What this member's client verified of the ledger before (pinned server key, largest head,
        #: checked recipient keys); in memory only unless loaded from a file (the CLI keeps one per key file).
        self.trust = trust if trust is not None else TrustState()
        #: The time requests are signed at (RFC 9421 ``created``); tests share the server's moved clock.
        self.clock = clock
        self.credentials = credentials
        self.linkage_key = linkage_key
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=self._ssl or True))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context this client trusts the server with (None: the system's defaults)."""
        return self._ssl

    @property
    def member_id(self) -> str:
        if self.credentials.member_id is None:
            raise InvalidRequest("This key file is not registered to a member yet.")
        return self.credentials.member_id

    # ------------------------------------------------------------------ transport

    async def request(self, method: str, path: str, document: Any = None, *, signed: bool = True) -> Any:
        """Send one signed request; return the decoded JSON, or raise :class:`ApiError`."""
        body = None if document is None else json.dumps(document, separators=(",", ":")).encode()
        return await self.request_raw(method, path, body, signed=signed)

    async def request_raw(self, method: str, path: str, body: bytes | None, *, signed: bool = True) -> Any:
        """Send ``body`` exactly as given (a JSON document already encoded), signed; as :meth:`request`."""
        if self._session is None:
            raise RuntimeError("Use the client as 'async with ExchangeClient(...) as client'.")
        # Sign the URL exactly as aiohttp will send it (yarl normalises percent-escapes such as %2C).
        url = str(URL(self.base_url + path))
        headers = {"Accept": "application/json, application/problem+json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if signed:
            headers |= httpsig.sign_request(method, url, body or b"", self.credentials.signing, now=self.clock())
        async with self._session.request(method, url, data=body or None, headers=headers) as response:
            raw = await response.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = {"detail": raw[:200].decode("utf-8", "replace")}
            if response.status >= 400:
                raise ApiError.from_response(response, payload)
            return payload

    async def request_text(self, method: str, path: str) -> str:
        """A signed request whose answer is text (the ledger export); problems raise :class:`ApiError`."""
        if self._session is None:
            raise RuntimeError("Use the client as 'async with ExchangeClient(...) as client'.")
        # Sign the URL exactly as aiohttp will send it (yarl normalises percent-escapes such as %2C).
        url = str(URL(self.base_url + path))
        headers = httpsig.sign_request(method, url, b"", self.credentials.signing, now=self.clock())
        async with self._session.request(method, url, headers=headers) as response:
            if response.status >= 400:
                try:
                    problem = json.loads(await response.read())
                except ValueError:
                    problem = {}
                raise ApiError.from_response(response, problem)
            return await response.text()

    # ------------------------------------------------------------------ directory

    async def health(self) -> Any:
        return await self.request("GET", "/health", signed=False)

    async def me(self) -> Any:
        return await self.request("GET", "/v1/me")

    async def directory(
        self,
        agency: str | None = None,
        *,
        members: Sequence[str] | None = None,
        role: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> Any:
        """One page of the directory: ``{"agencies": [...], "members": [...], "next_cursor": ...}``.

        Filter by ``agency``, by the ``members`` named (at most 100 ids) and by ``role`` (comma-separated,
        any of); each member carries their current keys. Pass ``next_cursor`` back as ``cursor`` for more.
        """
        params = [("member", m) for m in members or ()]
        params += [(k, v) for k, v in (("agency", agency), ("role", role), ("cursor", cursor)) if v]
        if limit is not None:
            params.append(("limit", str(limit)))
        return await self.request("GET", "/v1/directory" + ("?" + urlencode(params, safe=",") if params else ""))

    async def directory_members(self, agency: str | None = None, *, role: str | None = None) -> list[Any]:
        """Every member the directory lists (of ``agency``, holding any of ``role``), page by page."""
        listed: list[Any] = []
        cursor = None
        while True:
            page = await self.directory(agency, role=role, cursor=cursor)
            listed.extend(page["members"])
            cursor = page.get("next_cursor")
            if not cursor:
                return listed

    async def lookup_members(self, member_ids: Sequence[str]) -> dict[str, Any]:
        """The directory's entries for these members only (id → entry); ids it does not list are absent."""
        # Only what has a member id's shape is asked for: nothing else can be listed, and the server refuses it.
        wanted = [m for m in dict.fromkeys(member_ids) if _MEMBER_ID.fullmatch(m)]
        found: dict[str, Any] = {}
        for start in range(0, len(wanted), _LOOKUP_CHUNK):
            chunk = wanted[start : start + _LOOKUP_CHUNK]
            page = await self.directory(members=chunk, limit=len(chunk))
            found |= {m["id"]: m for m in page["members"]}
        return found

    async def agencies(self) -> list[Any]:
        """Every agency in the directory, by name, with the purposes it may send and receive."""
        return await self.every("/v1/agencies", "agencies")

    async def register_member(
        self,
        agency: str,
        display_name: str,
        roles: Sequence[str],
        new_member: MemberCredentials | Mapping[str, Any],
    ) -> Any:
        """Register a member of your agency (as its admin) from their enrolment (public keys and their
        own proof of possession; see :meth:`MemberCredentials.enrolment`), or from their credentials."""
        enrolment = new_member.enrolment() if isinstance(new_member, MemberCredentials) else new_member
        keys = {name: enrolment[name] for name in ("signing_key", "encryption_key", "proof")}
        return await self.request(
            "POST", "/v1/members", {"agency": agency, "display_name": display_name, "roles": list(roles)} | keys
        )

    async def add_key(self, use: str, public: bytes, *, proof: bytes | None = None) -> Any:
        """Add a key to your own account (nobody else can); a signing key needs ``proof``, see
        :meth:`add_signing_key`."""
        document: dict[str, Any] = {"use": use, "public": crypto.b64encode(public)}
        if proof is not None:
            document["proof"] = crypto.b64encode(proof)
        return await self.request("POST", f"/v1/members/{self.member_id}/keys", document)

    async def add_signing_key(self, key: crypto.SigningKey) -> Any:
        """Add a new signing key of yours, with its proof of possession (a signature made with it)."""
        statement = statements.new_key_statement(self.member_id, key.key_id, "signing")
        return await self.add_key("signing", key.public_bytes, proof=key.sign(statement))

    async def add_encryption_key(self, public: bytes) -> Any:
        """Add a new encryption key of yours (the request's own signature binds it to you)."""
        return await self.add_key("encryption", public)

    async def revoke_key(self, key_id: str) -> Any:
        return await self.request("POST", f"/v1/keys/{key_id}/revoke")

    # ------------------------------------------------------------------ sending

    async def resolve_recipients(self, to: Sequence[str]) -> list[crypto.Recipient]:
        """The recipients :meth:`resolve` finds for ``to`` (without saying who was skipped)."""
        return list((await self.resolve(to)).recipients)

    async def resolve(self, to: Sequence[str]) -> Resolution:
        """Who ``to`` names, each with the current encryption key to seal to, fetching only them.

        ``mem_...`` is one member; ``agency:agy_...`` is the agency's inbox: its duty members
        (:data:`DUTY_ROLES`) other than you. A duty member with no current encryption key (revoked or
        expired) could not open the packet: they are left out and listed in ``skipped``. Raises
        :class:`NoCurrentKey` if a member named by id has no current key, or if nobody in an agency's
        inbox has one; :class:`InvalidRequest` for an id or agency the directory does not list.
        """
        named = [t for t in to if not t.startswith("agency:")]
        found = await self.lookup_members(named)
        chosen: dict[str, Any] = {}
        skipped: dict[str, SkippedRecipient] = {}
        for target in to:
            if not target.startswith("agency:"):
                if target not in found:
                    raise InvalidRequest(f"Recipient {target} is not in the directory.")
                entry = found[target]
                if target != self.member_id and not _encryption_keys(entry):
                    raise NoCurrentKey(
                        f"Recipient {entry['display_name']} ({target}) has no current encryption key (it was"
                        " revoked or has expired), so they could not open what you send. Nothing was sent: they must"
                        " add a new key themselves ('exchange keys rotate'); ask them to, or send to someone else."
                    )
                chosen.setdefault(target, entry)
                continue
            agency = target.removeprefix("agency:")
            duty, name = await self._duty_members(agency)
            duty = [m for m in duty if m["id"] != self.member_id]
            if not duty:
                raise InvalidRequest(f"No member of agency {name} ({agency}) can receive packets.")
            reachable = {m["id"] for m in duty if _encryption_keys(m)}
            if not reachable:
                names = ", ".join(f"{m['display_name']} ({m['id']})" for m in duty)
                raise NoCurrentKey(
                    f"Nobody in the inbox of {name} ({agency}) can open what you send: {names} "
                    f"{'has' if len(duty) == 1 else 'have'} no current encryption key (revoked or expired)."
                    " Nothing was sent. They must add new keys themselves ('exchange keys rotate'): tell that"
                    " agency (its admin can reach them), or address a member who has a key."
                )
            for member in duty:
                if member["id"] in reachable:
                    chosen.setdefault(member["id"], member)
                else:
                    skipped.setdefault(member["id"], SkippedRecipient.without_key(member))
        recipients = []
        for member_id, entry in chosen.items():
            if member_id == self.member_id:
                continue
            key = _encryption_keys(entry)[-1]
            public = crypto.b64decode(key["public"], what="recipient's encryption key")
            # A key id is the key's fingerprint: check it here rather than trust the directory's word, so
            # the id in the signed manifest is the key the packet was sealed to, and the id a recipient
            # reads out to check their key by phone or letter really names it.
            if crypto.check_encryption_public_key(public) != key["key_id"]:
                raise CryptoError(f"The directory's encryption key for {member_id} does not match its key id.")
            recipients.append(crypto.Recipient(member_id, entry["agency"], key["key_id"], public))
        await self.check_recipient_keys(recipients)
        # A member named by id as well as through their agency's inbox is a recipient, not skipped.
        return Resolution(tuple(recipients), tuple(s for m, s in skipped.items() if m not in chosen))

    async def _duty_members(self, agency: str) -> tuple[list[Any], str]:
        """The agency's duty members (every page) and its name; :class:`InvalidRequest` if there is no such agency."""
        members: list[Any] = []
        cursor = None
        name = None
        while True:
            page = await self.directory(agency, role=",".join(sorted(DUTY_ROLES)), cursor=cursor)
            name = name or next((a["name"] for a in page["agencies"] if a["id"] == agency), None)
            members.extend(page["members"])
            cursor = page.get("next_cursor")
            if not cursor:
                break
        if name is None:
            raise InvalidRequest(f"Agency {agency} is not in the directory.")
        return members, name

    # ------------------------------------------------------------------ key transparency

    async def key_history(self, member_id: str) -> KeyHistory:
        """``member_id``'s keys as the signed ledger records them, every proof verified here (and the head
        checked against the one this client verified before, which it then remembers)."""
        # One check at a time per trust state: each asks for consistency from the head the one before it
        # verified, so concurrent sends never judge a proof against a head it was not made from.
        async with self.trust.lock:
            since = f"?since={self.trust.head.size}" if self.trust.head is not None else ""
            answer = await self.request("GET", f"/v1/members/{quote(member_id, safe='')}/key-history{since}")
            history = check_key_history(answer, member_id, self.trust)
            self.trust.save()
        return history

    async def check_recipient_keys(self, recipients: Sequence[crypto.Recipient]) -> None:
        """Seal only to keys the ledger made for their member and has not revoked: a key the directory offers
        but the ledger lacks is a substitution, refused with :class:`KeyTransparencyError`."""
        for recipient in recipients:
            if self.trust.checked.get(recipient.key_id) == recipient.member:
                continue  # the ledger only grows: a key found there once stays found
            history = await self.key_history(recipient.member)
            # A key registered a moment ago may not be inside a signed head yet: wait for the next head.
            waited = 0.0
            while recipient.key_id not in history.keys and history.pending and waited < KEY_EVENT_WAIT_SECONDS:
                await asyncio.sleep(0.1)
                waited += 0.1
                history = await self.key_history(recipient.member)
            check_sealing_key(history, recipient.key_id)
            self.trust.checked[recipient.key_id] = recipient.member
        self.trust.save()

    async def prepare(
        self,
        packet_file: Mapping[str, Any],
        *,
        now: datetime | None = None,
        base_dir: Path | None = None,
        allow_identifiers: str | None = None,
    ) -> PreparedPacket:
        """Build, seal and sign a packet from a practitioner's packet file (values stay local).

        Document and image fields name a file; relative paths are read from ``base_dir``
        (the packet file's folder, for the CLI). An anonymous consultation's values are checked
        for identifiers first (:mod:`exchange.identifiers`, with the file's ``case_names``) and
        :class:`~exchange.errors.IdentifyingContent` is raised, before anything is sent, unless
        ``allow_identifiers`` gives the sender's reason code; the manifest's ``identifier_check``
        says which it was. Agency inbox members without a current encryption key are left out and
        named in the result's ``skipped`` (see :meth:`resolve`).
        """

        def read_attachment(name: str) -> bytes:
            path = Path(name) if base_dir is None else base_dir / name
            try:
                return path.read_bytes()
            except OSError:
                raise InvalidRequest(f"The attachment {name} cannot be read.") from None

        sharing, body_fields, sealed_extras = policy.manifest_parts_from_packet_file(
            packet_file, read_attachment=read_attachment
        )
        identifier_check = None
        if packet_file.get("purpose") == "anonymous_consultation" or packet_file.get("kind") == "consultation":
            # The server cannot read the body, so this is the only place its text can be checked.
            names = [n for n in packet_file.get("case_names") or () if isinstance(n, str)]
            values = {f["name"]: f.get("value") for f in body_fields}
            found = identifiers.check_consultation(values, names) + identifiers.check_consultation(sealed_extras, names)
            identifier_check = identifiers.identifier_check(found, allow_identifiers)
        resolution = await self.resolve(packet_file.get("to", []))
        recipients = resolution.recipients
        packet_id = new_id("pkt")
        manifest: dict[str, Any] = {
            "version": 1,
            "packet_id": packet_id,
            "created": iso(now or self.clock()),
            "sender": {
                "member": self.member_id,
                "agency": self.credentials.agency_id,
                "signing_key": self.credentials.signing.key_id,
            },
            "recipients": [{"member": r.member, "agency": r.agency, "encryption_key": r.key_id} for r in recipients],
        } | sharing
        identifier = packet_file.get("subject_identifier")
        if identifier:
            if self.linkage_key is None:
                raise InvalidRequest(
                    "The packet names a subject identifier but no linkage key is configured to pseudonymise it."
                )
            manifest["subject"] = {"pseudonym": crypto.subject_pseudonym(str(identifier), self.linkage_key)}
        if identifier_check is not None:
            manifest["identifier_check"] = identifier_check
        body = {"packet_id": packet_id, "fields": body_fields} | sealed_extras
        sealed = crypto.seal_packet(manifest, body, recipients, self.credentials.signing)
        return PreparedPacket(
            sealed.manifest,
            sealed.signature,
            sealed.body,
            sealed.sealed_keys,
            sealed.manifest_digest,
            skipped=resolution.skipped,
        )

    def approval_for(self, packet_id: str, manifest_digest: str, decision: str = "approve") -> dict[str, Any]:
        """This member's signed decision on sharing a manifest without consent (managers only)."""
        statement = statements.approval_statement(packet_id, manifest_digest, self.member_id, decision)
        return {
            "approver": self.member_id,
            "key_id": self.credentials.signing.key_id,
            "decision": decision,
            "signature": crypto.b64encode(self.credentials.signing.sign(statement)),
        }

    async def submit(self, sealed: crypto.SealedPacket, approval: Mapping[str, Any] | None = None) -> Any:
        """Submit a sealed packet; the server's receipt, with ``skipped`` (the agency inbox members it was
        not sealed to, and why) when ``sealed`` came from :meth:`prepare`."""
        document: dict[str, Any] = {
            "manifest": sealed.manifest,
            "signature": crypto.b64encode(sealed.signature),
            "body": crypto.b64encode(sealed.body),
            "sealed_keys": {m: crypto.b64encode(k) for m, k in sealed.sealed_keys.items()},
        }
        if approval is not None:
            document["approval"] = dict(approval)
        receipt = await self.request("POST", "/v1/packets", document)
        if isinstance(sealed, PreparedPacket) and isinstance(receipt, dict):
            receipt["skipped"] = [s.as_json() for s in sealed.skipped]
        return receipt

    async def send(self, packet_file: Mapping[str, Any], *, allow_identifiers: str | None = None) -> Any:
        return await self.submit(await self.prepare(packet_file, allow_identifiers=allow_identifiers))

    # ------------------------------------------------------------------ information requests and decisions
    # A request is signed and holds no personal data; its details (who the child is, why) are sealed
    # to each holder. Answer one with send() and a packet file whose in_reply_to names it.

    async def prepare_request(self, request_file: Mapping[str, Any], *, now: datetime | None = None) -> dict[str, Any]:
        """Build, seal and sign a request from a request file (``exchange template PURPOSE --request``).

        ``from`` is ``agency:agy_...`` (every duty member of it) or ``mem_...`` (one member); the
        ``details`` are sealed to each of them and only their digests are signed and sent readable.
        Duty members without a current encryption key are left out, as the server expects
        (:meth:`request_information` says who).
        """
        return (await self._prepare_request(request_file, now=now))[0]

    async def _prepare_request(
        self, request_file: Mapping[str, Any], *, now: datetime | None = None
    ) -> tuple[dict[str, Any], tuple[SkippedRecipient, ...]]:
        cleaned = policy.clean_packet_file(request_file)
        schemas.check(cleaned, "request-file.v1", what="request file")
        resolution = await self.resolve([cleaned["from"]])
        holders = resolution.recipients
        if not holders:
            raise InvalidRequest("You cannot ask yourself for information.")
        holder: dict[str, str] = {"agency": holders[0].agency}
        if cleaned["from"].startswith("mem_"):
            holder["member"] = cleaned["from"]
        purpose = cleaned["purpose"]
        request_id = new_id("req")
        note = {"request_id": request_id, "details": cleaned.get("details", {})}
        context = statements.request_note_context(request_id)
        sealed = {
            holder_member.member: crypto.seal_note(
                note, holder_member.member, holder_member.key_id, holder_member.public_bytes, context=context
            )
            for holder_member in holders
        }
        request: dict[str, Any] = {
            "version": 1,
            "request_id": request_id,
            "created": iso(now or utc_now()),
            "requester": {
                "member": self.member_id,
                "agency": self.credentials.agency_id,
                "signing_key": self.credentials.signing.key_id,
            },
            "holder": holder,
            "purpose": purpose,
            "lawful_basis": cleaned.get("lawful_basis", {}),
            "fields": cleaned["fields"],
            "urgency": cleaned["urgency"],
            "details": [
                {"member": r.member, "encryption_key": r.key_id, "digest": crypto.digest_text(sealed[r.member])}
                for r in holders
            ],
        }
        identifier = cleaned.get("subject_identifier")
        if identifier:
            request["subject"] = {"pseudonym": self._pseudonym(str(identifier))}
        document = {
            "request": request,
            "signature": crypto.b64encode(self.credentials.signing.sign(statements.request_statement(request))),
            "sealed_details": {member: crypto.b64encode(note) for member, note in sealed.items()},
        }
        return document, resolution.skipped

    async def request_information(self, request_file: Mapping[str, Any]) -> Any:
        """Ask for information (``POST /v1/requests``); the answer comes as a packet, or as a decline.

        The server's answer has ``skipped`` added: the agency's duty members the request was not sealed
        to because they have no current encryption key."""
        document, skipped = await self._prepare_request(request_file)
        answer = await self.request("POST", "/v1/requests", document)
        if isinstance(answer, dict):
            answer["skipped"] = [s.as_json() for s in skipped]
        return answer

    async def requests(
        self,
        role: str | None = None,
        state: str | None = None,
        *,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Any:
        """A page of requests you made (``role="sent"``), hold (``"received"``) or both (the default):
        ``{"requests": [...], "next_cursor": ...}``."""
        # page() leaves out empty parameters, so no role means both sides.
        return await self.page("/v1/requests", state=state, cursor=cursor, limit=limit, role=role or "")

    async def open_request(self, request_id: str) -> OpenedRequest:
        """Fetch a request, verify the requester's signature, and open what is sealed to you: the details
        (as a holder) or a decline's explanation (as the requester), verifying the decliner's signature."""
        fetched = await self.request("GET", f"/v1/requests/{request_id}")
        request = fetched["request"]
        if request.get("request_id") != request_id:
            raise CryptoError("The server returned another request than the one asked for.")
        _verify(
            fetched.get("requester_signing_key"),
            request["requester"]["signing_key"],
            statements.request_statement(request),
            fetched["signature"],
            "the requester's signature",
        )
        details = None
        if fetched.get("sealed_details"):
            details = self._open_details(request, fetched["sealed_details"])
        decline = fetched.get("declined")
        explanation = None
        if decline is not None:
            told = decline.get("explanation")
            sealed = crypto.b64decode(told, what="explanation") if told else None
            note_digest = crypto.digest_text(sealed) if sealed is not None else decline["note_digest"]
            statement = statements.decline_statement(
                request_id,
                statements.request_digest(request),
                decline["declined_by"],
                decline["reason_codes"],
                note_digest=note_digest,
                note_key=decline["explanation_key"],
            )
            _verify(
                decline.get("decliner_signing_key"), decline["key_id"], statement, decline["signature"], "the decline"
            )
            if sealed is not None:
                explanation = self._open_own_note(
                    sealed, decline["explanation_key"], statements.decline_note_context(request_id)
                ).get("explanation")
        return OpenedRequest(request_id, request, fetched["state"], details, explanation, fetched)

    async def decline(self, request_id: str, reasons: Sequence[str], explanation: str) -> Any:
        """Decline a request made to you: reason codes, and an explanation sealed to the requester, signed."""
        opened = await self.open_request(request_id)
        requester = opened.request["requester"]["member"]
        found = await self.resolve_recipients([requester])
        if not found:
            raise InvalidRequest("You cannot decline your own request.")
        to = found[0]
        sealed = crypto.seal_note(
            {"request_id": request_id, "explanation": explanation},
            to.member,
            to.key_id,
            to.public_bytes,
            context=statements.decline_note_context(request_id),
        )
        statement = statements.decline_statement(
            request_id,
            statements.request_digest(opened.request),
            self.member_id,
            list(reasons),
            note_digest=crypto.digest_text(sealed),
            note_key=to.key_id,
        )
        return await self.request(
            "POST",
            f"/v1/requests/{request_id}/decline",
            {
                "key_id": self.credentials.signing.key_id,
                "reason_codes": list(reasons),
                "explanation": {"encryption_key": to.key_id, "sealed": crypto.b64encode(sealed)},
                "signature": crypto.b64encode(self.credentials.signing.sign(statement)),
            },
        )

    async def decide_not_to_share(
        self,
        *,
        purpose: str,
        fields_considered: Sequence[str],
        reason_codes: Sequence[str],
        reasons: str,
        subject_identifier: str | None = None,
        request_id: str | None = None,
        now: datetime | None = None,
    ) -> Any:
        """Record a decision not to share: signed, the reasons in words sealed to yourself. Nothing is sent."""
        decision_id = new_id("dns")
        own = self.credentials.encryption
        sealed = crypto.seal_note(
            {"decision_id": decision_id, "reasons": reasons},
            self.member_id,
            own.key_id,
            own.public_bytes,
            context=statements.decision_note_context(decision_id),
        )
        decision: dict[str, Any] = {
            "version": 1,
            "decision_id": decision_id,
            "created": iso(now or utc_now()),
            "member": self.member_id,
            "agency": self.credentials.agency_id,
            "signing_key": self.credentials.signing.key_id,
            "purpose": purpose,
            "fields_considered": list(fields_considered),
            "reason_codes": list(reason_codes),
            "note": {"encryption_key": own.key_id, "digest": crypto.digest_text(sealed)},
        }
        if subject_identifier:
            decision["subject"] = {"pseudonym": self._pseudonym(subject_identifier)}
        if request_id:
            decision["request_id"] = request_id
        document = {
            "decision": decision,
            "signature": crypto.b64encode(self.credentials.signing.sign(statements.share_decision_statement(decision))),
            "sealed_note": crypto.b64encode(sealed),
        }
        return await self.request("POST", "/v1/decisions", document)

    async def decisions(self, scope: str | None = None, *, cursor: str | None = None) -> Any:
        """A page of decisions not to share (``scope="agency"`` for a manager's view); your own carry
        ``reasons_in_words``, opened here with your key."""
        page = await self.page("/v1/decisions", cursor=cursor, scope=scope or "")
        for item in page["decisions"]:
            note = item.get("sealed_note")
            if note is not None:
                opened = self._open_own_note(
                    crypto.b64decode(note["sealed"], what="sealed reasons"),
                    note["encryption_key"],
                    statements.decision_note_context(item["decision_id"]),
                )
                item["reasons_in_words"] = opened.get("reasons")
        return page

    def _pseudonym(self, identifier: str) -> str:
        if self.linkage_key is None:
            raise InvalidRequest("A subject identifier is given but no linkage key is configured to pseudonymise it.")
        return crypto.subject_pseudonym(identifier, self.linkage_key)

    def _open_own_note(self, sealed: bytes, key_id: str, context: str) -> dict[str, Any]:
        key = self.credentials.encryption_key_for(key_id)
        if key is None:
            raise CryptoError(f"This was sealed to encryption key {key_id}, which this key file does not hold.")
        return crypto.open_note(key, sealed, self.member_id, key_id, context=context)

    def _open_details(self, request: Mapping[str, Any], mine: Mapping[str, str]) -> dict[str, Any]:
        sealed = crypto.b64decode(mine["sealed"], what="sealed details")
        entry = next((d for d in request["details"] if d["member"] == self.member_id), None)
        # The signed request names the digest of each holder's note: the server cannot swap one in.
        matches = entry is not None and (entry["encryption_key"], entry["digest"]) == (
            mine["encryption_key"],
            crypto.digest_text(sealed),
        )
        if entry is None or not matches:
            raise CryptoError("The sealed details do not match what the requester signed.")
        context = statements.request_note_context(request["request_id"])
        note = self._open_own_note(sealed, entry["encryption_key"], context)
        details = note.get("details")
        if note.get("request_id") != request["request_id"] or not isinstance(details, dict):
            raise CryptoError("The sealed details belong to another request.")
        return details

    # ------------------------------------------------------------------ receiving

    async def page(
        self, path: str, *, state: str | None = None, cursor: str | None = None, limit: int | None = None, **query: str
    ) -> Any:
        """One page of a listing (``{"<items>": [...], "next_cursor": ...}``), filtered by ``state``."""
        params = {k: v for k, v in (query | {"state": state, "cursor": cursor}).items() if v}
        if limit is not None:
            params["limit"] = str(limit)
        return await self.request("GET", path + ("?" + urlencode(params, safe=",") if params else ""))

    async def every(self, path: str, key: str, *, state: str | None = None, **query: str) -> list[Any]:
        """Every item of a listing, following ``next_cursor`` page by page, so nothing is cut off."""
        items: list[Any] = []
        cursor: str | None = None
        while True:
            answer = await self.page(path, state=state, cursor=cursor, limit=None, **query)
            items.extend(answer[key])
            cursor = answer.get("next_cursor")
            if not cursor:
                return items

    async def inbox(self, state: str | None = None) -> Any:
        """Every packet delivered to this member (newest first), optionally only in ``state`` (``delivered,opened``)."""
        return await self.every("/v1/inbox", "packets", state=state)

    async def outbox(self, state: str | None = None) -> Any:
        """Every packet this member sent, with each recipient's loop state."""
        return await self.every("/v1/outbox", "packets", state=state)

    async def open(self, packet_id: str) -> OpenedPacket:
        """Fetch, verify and decrypt a packet addressed to this member."""
        fetched = await self.request("GET", f"/v1/packets/{packet_id}")
        return open_fetched(fetched, self.credentials)

    async def receipt(
        self, seq: int, server_public_key: bytes | None = None, *, last_head: TreeHead | None = None
    ) -> tuple[dict[str, Any], TreeHead]:
        """Fetch and verify the proof that ledger entry ``seq`` (an event of yours) is in a signed head.

        Give the server's public key to check the head's signature too, and the last head you
        verified (``last_head``; keep the head this returns for next time) to check the new head
        extends it, which catches a ledger rewound or forked for you. Raises
        :class:`exchange.errors.LedgerProofError` if anything does not verify.
        """
        since = f"?since={last_head.size}" if last_head is not None else ""
        answer: dict[str, Any] = await self.request("GET", f"/v1/ledger/receipts/{int(seq)}{since}")
        head = check_inclusion_answer(answer, server_public_key)
        if last_head is not None:
            check_head_extends(last_head, head, answer, server_public_key)
        return answer, head

    async def acknowledge(self, packet_id: str) -> Any:
        """Open the packet (verifying it) and send a signed receipt over its manifest digest."""
        opened = await self.open(packet_id)
        statement = statements.acknowledgement_statement(packet_id, opened.manifest_digest, self.member_id)
        return await self.request(
            "POST",
            f"/v1/packets/{packet_id}/acknowledgement",
            {
                "key_id": self.credentials.signing.key_id,
                "signature": crypto.b64encode(self.credentials.signing.sign(statement)),
            },
        )

    # ------------------------------------------------------------------ escalations

    async def escalations(self, state: str | None = None, cursor: str | None = None, limit: int | None = None) -> Any:
        """One page of the overdue obligations this member may see: ``{"escalations": [...], "next_cursor": ...}``.

        ``state="open"`` keeps those neither acknowledged nor resolved; pass ``next_cursor`` back as
        ``cursor`` for the next page (or use ``every("/v1/escalations", "escalations")`` for all).
        """
        return await self.page("/v1/escalations", state=state, cursor=cursor, limit=limit)

    async def acknowledge_escalation(self, escalation_id: str) -> Any:
        """Record that you have taken an escalation in hand (once; a second time is 409)."""
        return await self.request("POST", f"/v1/escalations/{quote(escalation_id, safe='')}/acknowledgement")

    # ------------------------------------------------------------------ the feedback loop

    async def loop(self, packet_id: str) -> feedback.Loop:
        """The packet's loop as this member may see it, verified here (ids, signatures, manifest digest,
        the chain), with the notes meant for this member opened; :class:`CryptoError` if anything was changed."""
        return feedback.verify_loop(await self.request("GET", f"/v1/packets/{packet_id}/loop"), self.credentials)

    async def _seal_note_to(self, member: str, note: Mapping[str, Any], context: str) -> tuple[bytes, str]:
        """Seal ``note`` to ``member``'s current encryption key, checked against its key id."""
        if member == self.member_id:
            key_id, public = self.credentials.encryption.key_id, self.credentials.encryption.public_bytes
        else:
            [found] = await self.resolve_recipients([member])
            key_id, public = found.key_id, found.public_bytes
        return crypto.seal_note(note, member, key_id, public, context=context), key_id

    def _loop_document(self, statement: bytes, sealed: bytes | None, note_key: str | None) -> dict[str, Any]:
        document = {
            "key_id": self.credentials.signing.key_id,
            "signature": crypto.b64encode(self.credentials.signing.sign(statement)),
        }
        if sealed is not None and note_key is not None:
            document |= {"sealed_note": crypto.b64encode(sealed), "note_key": note_key}
        return document

    async def report(self, packet_id: str, action: str, narrative: str | None = None) -> Any:
        """Report what this recipient did or will do (``exchange actions`` lists the codes), with an
        optional narrative sealed to the sender; a report after the sender's query answers it."""
        loop = await self.loop(packet_id)
        mine = next((r for r in loop.recipients if r.member == self.member_id), None)
        answers = mine.latest.id if mine is not None and mine.latest is not None else None
        text = feedback.note_text(narrative, "narrative")
        feedback.check_action(loop.kind, action, has_narrative=text is not None)
        sealed = note_key = None
        if text is not None:
            context = feedback.note_context(feedback.REPORT, packet_id, self.member_id, answers)
            sealed, note_key = await self._seal_note_to(loop.sender, {"narrative": text}, context)
        statement = statements.loop_statement(
            feedback.REPORT,
            packet_id,
            loop.manifest_digest,
            self.member_id,
            self.member_id,
            action=action,
            note_digest=crypto.digest_text(sealed) if sealed is not None else None,
            answers=answers,
        )
        document = {"action": action, "answers": answers} | self._loop_document(statement, sealed, note_key)
        return await self.request("POST", f"/v1/packets/{packet_id}/reports", document)

    async def _review(self, packet_id: str, recipient: str, decision: str, question: str | None) -> Any:
        loop = await self.loop(packet_id)
        entry = next((r for r in loop.recipients if r.member == recipient), None)
        if entry is None or entry.latest is None:
            state = f" (it is {entry.words})" if entry is not None else ""
            raise InvalidRequest(f"{recipient} has not reported any action on {packet_id} yet{state}.")
        answers = entry.latest.id
        sealed = note_key = None
        if question is not None:
            context = feedback.note_context(feedback.QUERY, packet_id, recipient, answers)
            sealed, note_key = await self._seal_note_to(recipient, {"question": question}, context)
        statement = statements.loop_statement(
            decision,
            packet_id,
            loop.manifest_digest,
            recipient,
            self.member_id,
            note_digest=crypto.digest_text(sealed) if sealed is not None else None,
            answers=answers,
        )
        document = {"decision": decision, "answers": answers} | self._loop_document(statement, sealed, note_key)
        return await self.request("POST", f"/v1/packets/{packet_id}/recipients/{recipient}/review", document)

    async def confirm(self, packet_id: str, recipient: str) -> Any:
        """As the sender, confirm the recipient's latest action report: their loop is closed."""
        return await self._review(packet_id, recipient, feedback.CONFIRM, None)

    async def query(self, packet_id: str, recipient: str, question: str) -> Any:
        """As the sender, query the recipient's latest action report; the question is sealed to them
        and they owe an answer (another report) by the catalogue's deadline."""
        text = feedback.note_text(question, "question")
        if text is None:
            raise InvalidRequest("A query needs a question.")
        return await self._review(packet_id, recipient, feedback.QUERY, text)

    async def reply(self, packet_id: str, advice: str) -> Any:
        """As the adviser, answer an anonymous consultation: acknowledge it if not yet done, then report
        ``advice_given`` with the advice sealed to the practitioner who asked."""
        loop = await self.loop(packet_id)
        if loop.kind != "consultation":
            raise InvalidRequest("'reply' answers an anonymous consultation; report the action on other packets.")
        mine = loop.recipient(self.member_id)
        acknowledged = None
        if mine.status in ("delivered", "opened"):
            acknowledged = await self.acknowledge(packet_id)
        result = await self.report(packet_id, "advice_given", advice)
        return dict(result) | {"acknowledged": acknowledged}

    # ------------------------------------------------------------------ recall and correction

    async def recall(self, packet_id: str, reason: str) -> Any:
        """Recall a packet you sent that no recipient has opened; ``reason`` is a code
        (sent_to_wrong_recipient, wrong_child, contains_error, no_longer_necessary, other).
        Once anyone has opened it the server refuses with 409: send a correction instead."""
        return await self.request("POST", f"/v1/packets/{packet_id}/recall", {"reason": reason})

    async def correct(
        self,
        earlier_id: str,
        packet_file: Mapping[str, Any],
        fields: Sequence[str],
        *,
        base_dir: Path | None = None,
        approval: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send ``packet_file`` as a correction of your packet ``earlier_id``, naming the ``fields`` that were wrong.

        The correction must go to exactly the earlier packet's recipients: a packet file without
        ``to`` is addressed to them (read from your outbox). The server refuses (422) a correction
        to other recipients, naming a field the earlier packet did not have, or of a packet that is
        not yours or not delivered.
        """
        document = dict(packet_file) | {"corrects": {"packet_id": earlier_id, "fields": list(fields)}}
        if not document.get("to"):
            document["to"] = await self._recipients_of(earlier_id)
        return await self.submit(await self.prepare(document, base_dir=base_dir), approval)

    async def _recipients_of(self, packet_id: str) -> list[str]:
        for packet in await self.outbox():
            if packet["packet_id"] == packet_id:
                return [r["member"] for r in packet["recipients"]]
        raise InvalidRequest(f"Packet {packet_id} is not among the packets you sent.")

    # ------------------------------------------------------------------ subject view (auditors)

    def pseudonym_of(self, identifier: str) -> str:
        """The subject pseudonym of an identifier, computed here with the linkage key: the identifier is never sent."""
        if self.linkage_key is None:
            raise InvalidRequest("No linkage key is configured to turn the identifier into its pseudonym.")
        return crypto.subject_pseudonym(identifier, self.linkage_key)

    async def subject(self, pseudonym: str, *, start: int = 0, limit: int = 100) -> Any:
        """(auditors) One page of the ledger events about a subject, in seq order; ``next_start`` continues."""
        return await self.request("GET", f"/v1/ledger/subjects/{pseudonym}?start={int(start)}&limit={int(limit)}")

    async def subject_export(self, pseudonym: str, server_public_key: bytes | None = None) -> tuple[str, SubjectExport]:
        """(auditors) The subject's entries with inclusion proofs, verified here before they are returned.

        Returns the export's text (to keep) and what verification found. Give the server's public
        key to check the head's signature too. Raises :class:`exchange.errors.LedgerProofError`
        if anything does not verify.
        """
        text = await self.request_text("GET", f"/v1/ledger/subjects/{pseudonym}/export")
        return text, verify_subject_export(text.splitlines(), server_public_key, subject=pseudonym)


def open_fetched(fetched: Mapping[str, Any], credentials: MemberCredentials) -> OpenedPacket:
    """Verify and decrypt what ``GET /v1/packets/{id}`` returned; the digest is recomputed, not trusted."""
    manifest = fetched["manifest"]
    if credentials.member_id is None:
        raise InvalidRequest("This key file is not registered to a member yet.")
    body = crypto.open_packet(
        manifest,
        crypto.b64decode(fetched["signature"], what="manifest signature"),
        crypto.b64decode(fetched["sender_signing_key"], what="sender key"),
        crypto.b64decode(fetched["body"], what="body"),
        crypto.b64decode(fetched["sealed_key"], what="sealed key"),
        credentials.member_id,
        _key_sealed_to(manifest, credentials),
    )
    return OpenedPacket(
        fetched["packet_id"],
        manifest,
        crypto.manifest_digest(manifest),
        body,
        fetched.get("approval"),
        superseded_by=fetched.get("superseded_by"),
        corrected_fields=tuple(fetched.get("corrected_fields") or ()),
    )


def _verify(public: str | None, key_id: str, statement: bytes, signature: str, what: str) -> None:
    """Verify a signature with the public key the server sent, after checking it is the key the id names."""
    if public is None:
        raise CryptoError(f"The server did not send the key to verify {what}.")
    raw = crypto.b64decode(public, what="public key")
    # A key id is the key's fingerprint, so the server cannot hand over another key under the same id.
    if crypto.check_signing_public_key(raw) != key_id:
        raise CryptoError(f"The key sent to verify {what} is not the key {key_id}.")
    try:
        crypto.verify_signature(raw, statement, crypto.b64decode(signature, what="signature"))
    except CryptoError:
        raise CryptoError(f"{what.capitalize()} does not verify.") from None


def _key_sealed_to(manifest: Mapping[str, Any], credentials: MemberCredentials) -> crypto.EncryptionKey:
    """The private key, current or retired, that the manifest says this member's copy is sealed to.

    Key ids are fingerprints and the id is bound into the seal's HPKE ``info``, so no other key could
    open it: a key the file does not hold is reported as such rather than tried.
    """
    recipients = manifest.get("recipients")
    # Read before the sender's signature is checked (open_packet does that first), so read warily.
    named = [
        r.get("encryption_key")
        for r in (recipients if isinstance(recipients, list) else [])
        if isinstance(r, Mapping) and r.get("member") == credentials.member_id
    ]
    if not named:
        raise CryptoError("This packet is not addressed to you.")
    key = credentials.encryption_key_for(str(named[0]))
    if key is None:
        raise CryptoError(
            f"This packet was sealed to encryption key {named[0]}, which this key file does not hold; "
            "open it with the key file that holds that key."
        )
    return key
