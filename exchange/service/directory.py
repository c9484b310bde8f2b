"""Directory use cases: agencies, members, their keys, and who a signed request comes from."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from exchange import crypto, schemas, statements
from exchange.domain import (
    Actor,
    Agency,
    AgencyKind,
    Event,
    KeyUse,
    Member,
    MemberKey,
    Role,
    iso,
    new_id,
    parse_iso,
)
from exchange.errors import (
    AuthenticationFailed,
    CryptoError,
    Forbidden,
    InvalidRequest,
    NotFound,
    NotKeyOwner,
    ProofOfPossessionInvalid,
    RoleNeedsOperator,
)
from exchange.service import paging
from exchange.service.context import Change, ServiceContext


@dataclass(frozen=True)
class RegisteredMember:
    member: Member
    signing_key: MemberKey
    encryption_key: MemberKey


def _make_key(member_id: str, use: KeyUse, public: bytes, now: datetime, not_after: str | None) -> MemberKey:
    if use is KeyUse.SIGNING:
        key_id = crypto.check_signing_public_key(public)
    else:
        key_id = crypto.check_encryption_public_key(public)
    ends: str | None = None
    if not_after is not None:
        try:
            # Stored in the one form every stored time has (UTC, "Z"), so times compare as they read.
            moment = parse_iso(not_after)
            ends = iso(moment)
        except (ValueError, OverflowError):
            raise InvalidRequest("A key's not_after must be an RFC 3339 time such as 2027-03-31T17:00:00Z.") from None
        if moment <= now:
            raise InvalidRequest("A key's validity must end in the future.")
    return MemberKey(key_id, member_id, use, public, iso(now), ends, None, iso(now))


async def create_agency(ctx: ServiceContext, name: str, kind: str) -> Agency:
    """Create an agency. Only the operator does this (``exchange init`` / seeding), never the API."""
    try:
        agency_kind = AgencyKind(kind)
    except ValueError:
        raise InvalidRequest(
            f"Unknown agency kind {kind!r}; use one of: {', '.join(k.value for k in AgencyKind)}."
        ) from None
    async with ctx.change() as change:
        agency = Agency(new_id("agy"), name, agency_kind, iso(change.now))
        await change.tx.insert_agency(agency)
        await change.record(
            Event("agency.created", None, agency.id, details={"agency": agency.id, "kind": agency_kind.value})
        )
    return agency


async def set_agency_purposes(
    ctx: ServiceContext,
    agency_id: str,
    send: list[str] | None,
    receive: list[str] | None,
    known_purposes: frozenset[str],
) -> Agency:
    """Set which purposes an agency may send and receive (operator only, like ``exchange init``).

    ``None`` removes a list (the agency may then use every purpose its kind allows).
    Unknown purpose codes are refused: a typo must not silently block an agency's sharing.
    """
    agency = await ctx.store.get_agency(agency_id)
    if agency is None:
        raise NotFound("No such agency.")
    unknown = sorted(set(send or []) | set(receive or []) - known_purposes)
    if unknown:
        raise InvalidRequest(f"Unknown purpose codes: {', '.join(unknown)}; see 'exchange purposes'.")
    send_set = frozenset(send) if send is not None else None
    receive_set = frozenset(receive) if receive is not None else None
    async with ctx.change() as change:
        await change.tx.set_agency_purposes(agency_id, send_set, receive_set)
        await change.record(
            Event(
                "agency.purposes_set",
                None,
                agency_id,
                details={
                    "agency": agency_id,
                    "send": sorted(send_set) if send_set is not None else None,
                    "receive": sorted(receive_set) if receive_set is not None else None,
                },
            )
        )
    updated = await ctx.store.get_agency(agency_id)
    assert updated is not None
    return updated


#: Unicode categories a name shown to practitioners may not hold: controls (Cc, NUL included), format
#: characters (Cf: bidi overrides and isolates, zero-width joiners and spaces), surrogates (Cs),
#: private-use (Co) and unassigned (Cn) code points. Each can make one name look like another.
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})


def clean_display_name(name: str) -> str:
    """The name in NFC with its ends trimmed; :class:`InvalidRequest` if it holds a character that could
    disguise it (a control, bidi or zero-width character), or nothing visible."""
    normal = unicodedata.normalize("NFC", name).strip()
    refused = sorted({f"U+{ord(c):04X}" for c in normal if unicodedata.category(c) in _REFUSED_CATEGORIES})
    if refused:
        raise InvalidRequest(
            f"A display name may not hold control, bidi or zero-width characters ({', '.join(refused)}):"
            " they can make one person's name look like another's."
        )
    if not normal:
        raise InvalidRequest("A display name needs at least one visible character.")
    return normal


#: Roles an agency admin may grant: those that act inside the admin's own agency. The auditor reads every
#: agency's ledger, so only the deployment's operator grants it (``exchange operator register``).
ADMIN_GRANTABLE_ROLES = frozenset({Role.PRACTITIONER, Role.MANAGER, Role.SAFEGUARDING_LEAD, Role.AGENCY_ADMIN})


def check_enrolment_proof(signing_public: bytes, encryption_public: bytes, proof: bytes) -> None:
    """The new member's own signature, with their new signing key, over the enrolment statement naming
    both keys; :class:`ProofOfPossessionInvalid` otherwise (nobody binds a person to keys without them)."""
    signing_id = crypto.check_signing_public_key(signing_public)
    encryption_id = crypto.check_encryption_public_key(encryption_public)
    try:
        crypto.verify_signature(signing_public, statements.enrolment_statement(signing_id, encryption_id), proof)
    except CryptoError:
        raise ProofOfPossessionInvalid(
            "The registration's proof does not verify: it must be the new member's signature, made with their new"
            " signing key, over both their keys. Ask them for the enrolment file 'exchange keys new' wrote."
        ) from None


async def _register(
    change: Change,
    actor: Actor | None,
    agency: Agency,
    display_name: str,
    roles: Iterable[Role],
    signing_public: bytes,
    encryption_public: bytes,
    proof: bytes | None,
    not_after: Mapping[str, str | None],
) -> RegisteredMember:
    if proof is not None:
        check_enrolment_proof(signing_public, encryption_public, proof)
    member = Member(new_id("mem"), agency.id, clean_display_name(display_name), frozenset(roles), iso(change.now))
    signing = _make_key(member.id, KeyUse.SIGNING, signing_public, change.now, not_after.get("signing"))
    encryption = _make_key(member.id, KeyUse.ENCRYPTION, encryption_public, change.now, not_after.get("encryption"))
    await change.tx.insert_member(member)
    await change.tx.insert_key(signing)
    await change.tx.insert_key(encryption)
    await change.record(
        Event(
            "member.registered",
            actor.member_id if actor else None,
            agency.id,
            details={
                "member": member.id,
                "roles": sorted(r.value for r in member.roles),
                "signing_key": signing.key_id,
                "encryption_key": encryption.key_id,
                # Whether the member's own signature bound these keys (the operator's seeding may not have one).
                "proof_of_possession": proof is not None,
            },
        )
    )
    return RegisteredMember(member, signing, encryption)


async def bootstrap_member(
    ctx: ServiceContext,
    agency: Agency,
    display_name: str,
    roles: Iterable[Role],
    signing_public: bytes,
    encryption_public: bytes,
    proof: bytes | None = None,
) -> RegisteredMember:
    """Register a member as the operator (``exchange init``, ``exchange operator register``, demo seeding).

    The operator may grant any role, auditor included; with ``proof`` the member's own enrolment
    signature is checked as the API checks it.
    """
    async with ctx.change() as change:
        return await _register(
            change, None, agency, display_name, roles, signing_public, encryption_public, proof, {}
        )


async def register_member(ctx: ServiceContext, actor: Actor, document: Any) -> RegisteredMember:
    """An agency admin registers a member of their own agency, with the member's public keys and proof."""
    schemas.check(document, "member.v1", what="member registration")
    if Role.AGENCY_ADMIN not in actor.member.roles:
        raise Forbidden("Only an agency admin can register members.")
    if document["agency"] != actor.agency_id:
        raise Forbidden("An agency admin can register members of their own agency only.")
    roles = frozenset(Role(r) for r in document["roles"])
    beyond = sorted(r.value for r in roles - ADMIN_GRANTABLE_ROLES)
    if beyond:
        raise RoleNeedsOperator(
            f"An agency admin cannot grant {', '.join(beyond)}: it reaches beyond one agency, so the deployment's"
            " operator grants it ('exchange operator register')."
        )
    signing_public = crypto.b64decode(document["signing_key"]["public"], what="signing key")
    encryption_public = crypto.b64decode(document["encryption_key"]["public"], what="encryption key")
    proof = crypto.b64decode(document["proof"], what="proof of possession")
    async with ctx.change() as change:
        return await _register(
            change,
            actor,
            actor.agency,
            document["display_name"],
            roles,
            signing_public,
            encryption_public,
            proof,
            {
                "signing": document["signing_key"].get("not_after"),
                "encryption": document["encryption_key"].get("not_after"),
            },
        )


async def add_key(ctx: ServiceContext, actor: Actor, member_id: str, document: Any) -> MemberKey:
    """A member adds a key to their own account (rotation), in a request signed with a current key of theirs.

    Nobody else can: not an agency admin, whose key for a manager would let them approve as that
    manager and, since senders seal to the newest key, read what is sent to them. A new signing key
    carries its own signature (proof of possession). Every key event is in the ledger, where the
    member's ``exchange keys monitor`` and every sender's client check it.
    """
    schemas.check(document, "key.v1", what="key")
    member = await ctx.store.get_member(member_id)
    if member is None:
        raise NotFound("No such member.")
    if member.id != actor.member_id:
        raise NotKeyOwner(
            "Only the member adds keys to their own account ('exchange keys rotate' with their own key file)."
            " An admin can revoke a lost key; the member then makes new keys and is registered again."
        )
    use = KeyUse(document["use"])
    public = crypto.b64decode(document["public"], what="public key")
    if use is KeyUse.SIGNING:
        key_id = crypto.check_signing_public_key(public)
        if "proof" not in document:
            raise ProofOfPossessionInvalid("A new signing key needs its proof: a signature made with it (see key.v1).")
        try:
            crypto.verify_signature(
                public,
                statements.new_key_statement(member.id, key_id, use.value),
                crypto.b64decode(document["proof"], what="proof of possession"),
            )
        except CryptoError:
            raise ProofOfPossessionInvalid(
                "The new signing key's proof does not verify: sign the new-key statement with the new key."
            ) from None
    async with ctx.change() as change:
        key = _make_key(member.id, use, public, change.now, document.get("not_after"))
        await change.tx.insert_key(key)
        await change.record(
            Event(
                "key.added",
                actor.member_id,
                actor.agency_id,
                details={"member": member.id, "key": key.key_id, "use": key.use.value},
            )
        )
    return key


async def _may_revoke(ctx: ServiceContext, actor: Actor, member_id: str) -> Member:
    """The member whose key is revoked, if the actor is that member or an admin of their agency."""
    member = await ctx.store.get_member(member_id)
    if member is None:
        raise NotFound("No such member.")
    if member.id == actor.member_id:
        return member
    # Revoking only ever takes power away (a leaver's or a lost laptop's key), so an admin may do it.
    if Role.AGENCY_ADMIN in actor.member.roles and member.agency_id == actor.agency_id:
        return member
    raise Forbidden("Only the member or an admin of their agency can revoke their keys.")


async def revoke_key(ctx: ServiceContext, actor: Actor, key_id: str) -> MemberKey:
    """Revoke a key at once; requests signed with it are refused from now on."""
    key = await ctx.store.get_key(key_id)
    if key is None:
        raise NotFound("No such key.")
    member = await _may_revoke(ctx, actor, key.member_id)
    async with ctx.change() as change:
        await change.tx.revoke_key(key_id, iso(change.now))
        await change.record(
            Event(
                "key.revoked",
                actor.member_id,
                actor.agency_id,
                details={"member": member.id, "key": key_id, "use": key.use.value},
            )
        )
    revoked = await ctx.store.get_key(key_id)
    assert revoked is not None
    return revoked


async def actor_for_key(ctx: ServiceContext, key_id: str, now: datetime) -> tuple[Actor, MemberKey]:
    """The member a request-signing key belongs to, if the key is current; 401 otherwise."""
    key = await ctx.store.get_key(key_id)
    if key is None or key.use is not KeyUse.SIGNING:
        raise AuthenticationFailed("The request is signed with an unknown key.")
    # The same "current key" test as every other signed statement (exchange.service.keys).
    if not key.current_for(key.member_id, KeyUse.SIGNING, now):
        raise AuthenticationFailed("The request is signed with a key that is revoked or not valid now.")
    member = await ctx.store.get_member(key.member_id)
    if member is None or not member.active:
        raise AuthenticationFailed("The request is signed by a member who is not active.")
    agency = await ctx.store.get_agency(member.agency_id)
    if agency is None:
        raise AuthenticationFailed("The member's agency no longer exists.")
    return Actor(member, agency, key.key_id), key


#: The most members one directory look-up may name (``?member=``): more than a packet's recipient cap,
#: and a URL of that many ids stays well inside the 8 KiB request line servers accept.
MAX_LOOKUP = 100


def _agency_entry(agency: Agency) -> dict[str, Any]:
    return {
        "id": agency.id,
        "name": agency.name,
        "kind": agency.kind.value,
        "send_purposes": sorted(agency.send_purposes) if agency.send_purposes is not None else None,
        "receive_purposes": sorted(agency.receive_purposes) if agency.receive_purposes is not None else None,
    }


def _member_json(member: Member, keys: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": member.id,
        "agency": member.agency_id,
        "display_name": member.display_name,
        "roles": sorted(r.value for r in member.roles),
        "keys": keys,
    }


def _member_entry(member: Member, keys: Iterable[MemberKey]) -> dict[str, Any]:
    """A directory entry: the member with their current public keys, what a sender seals to."""
    return _member_json(
        member,
        [
            {
                "key_id": k.key_id,
                "use": k.use.value,
                "public": crypto.b64encode(k.public_bytes),
                "not_before": k.not_before,
                "not_after": k.not_after,
            }
            for k in keys
        ],
    )


async def directory(
    ctx: ServiceContext,
    *,
    agency_id: str | None = None,
    member_ids: Sequence[str] | None = None,
    roles: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> dict[str, Any]:
    """A page of active members with their current public keys: what a sender needs to seal a packet.

    Filters let a sender fetch only the members it seals to: ``member_ids`` (at most
    :data:`MAX_LOOKUP`; ids not in the directory are simply not listed), ``agency_id``, and
    ``roles`` (comma-separated; members holding any of them). ``agencies`` holds the agencies of the
    members listed, and the filtered agency if it exists (so an empty agency tells apart from an
    unknown one). Paged by an opaque cursor in registration order; raises :class:`InvalidRequest`
    for an unknown role, a bad cursor or too many ids.
    """
    if member_ids is not None and len(set(member_ids)) > MAX_LOOKUP:
        raise InvalidRequest(f"Name at most {MAX_LOOKUP} members in one directory look-up; ask again for the rest.")
    wanted_roles = paging.states(roles, Role, what="role")
    rows = await ctx.store.directory_members(
        limit + 1, paging.decode(cursor), agency_id=agency_id, member_ids=member_ids, roles=wanted_roles
    )
    shown = rows[:limit]
    now = ctx.clock()
    keys = await ctx.store.keys_of_members([m.id for m in shown])
    members = [_member_entry(m, (k for k in keys.get(m.id, []) if k.valid_at(now))) for m in shown]
    agencies = []
    for listed_id in dict.fromkeys([*([agency_id] if agency_id else []), *(m.agency_id for m in shown)]):
        agency = await ctx.store.get_agency(listed_id)
        if agency is not None:
            agencies.append(_agency_entry(agency))
    return {"agencies": agencies} | paging.page(members, rows, limit, lambda m: (m.created, m.id), key="members")


async def agencies(ctx: ServiceContext, *, limit: int = 100, cursor: str | None = None) -> dict[str, Any]:
    """A page of every agency (by name), with the purposes the directory lets it send and receive."""
    rows = await ctx.store.agencies_page(limit + 1, paging.decode(cursor))
    return paging.page([_agency_entry(a) for a in rows[:limit]], rows, limit, lambda a: (a.name, a.id), key="agencies")


async def with_current_key(ctx: ServiceContext, members: Sequence[Member], use: KeyUse) -> list[Member]:
    """Those of ``members`` who hold a current key for ``use`` now (the test every signed thing uses)."""
    now = ctx.clock()
    keys = await ctx.store.keys_of_members([m.id for m in members])
    return [m for m in members if any(k.current_for(m.id, use, now) for k in keys.get(m.id, []))]


def describe_member(member: Member, keys: Iterable[MemberKey]) -> dict[str, Any]:
    """The member and every key of theirs with its validity (their own view, and a registration's answer)."""
    return _member_json(
        member,
        [
            {
                "key_id": k.key_id,
                "use": k.use.value,
                "not_before": k.not_before,
                "not_after": k.not_after,
                "revoked_at": k.revoked_at,
            }
            for k in keys
        ],
    )
