"""First-run set-up: the server's key, the first agency and its admin, and the demo directory.

These run offline against the store (not through the API): they are how a deployment starts.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exchange import crypto
from exchange.config import Config
from exchange.domain import Role
from exchange.errors import InvalidRequest, NotFound
from exchange.keyfile import MemberCredentials
from exchange.policy import load_catalogue
from exchange.record import Record
from exchange.service import directory
from exchange.service.context import ServiceContext
from exchange.store import open_store


def ensure_server_key(config: Config) -> crypto.SigningKey:
    """Load the server's Ed25519 key, creating it (0600) and its public file on first run."""
    path = config.server_key_path
    if not path.exists():
        key = crypto.SigningKey.generate()
        crypto.save_server_key(path, key)
        config.server_public_key_path.write_text(crypto.b64encode(key.public_bytes) + "\n")
        return key
    key = crypto.load_server_key(path)
    if not config.server_public_key_path.exists():
        config.server_public_key_path.write_text(crypto.b64encode(key.public_bytes) + "\n")
    return key


@asynccontextmanager
async def offline_context(config: Config) -> AsyncIterator[ServiceContext]:
    """A service context without a web server, for ``exchange init`` and seeding."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    record = Record(config.record_log_path, console=False)
    store = await open_store(config.database_target)
    try:
        yield ServiceContext(
            store=store,
            config=config,
            record=record,
            server_key=ensure_server_key(config),
            catalogue=load_catalogue(),
        )
    finally:
        await store.close()
        record.close()


@dataclass(frozen=True)
class CreatedMember:
    label: str
    member_id: str
    agency_id: str
    roles: tuple[str, ...]
    key_file: Path


async def init(
    config: Config, *, agency_name: str, agency_kind: str, admin_name: str, key_file: Path, server: str
) -> CreatedMember:
    """Create the server key, the first agency and its admin; write the admin's key file."""
    async with offline_context(config) as ctx:
        agency = await directory.create_agency(ctx, agency_name, agency_kind)
        credentials = MemberCredentials.generate()
        registered = await directory.bootstrap_member(
            ctx,
            agency,
            admin_name,
            [Role.AGENCY_ADMIN],
            credentials.signing.public_bytes,
            credentials.encryption.public_bytes,
        )
    credentials.registered(registered.member.id, agency.id, server, admin_name).save(key_file)
    return CreatedMember("admin", registered.member.id, agency.id, ("agency_admin",), key_file)


async def set_agency_purposes(
    config: Config, agency_id: str, send: list[str] | None, receive: list[str] | None
) -> dict[str, object]:
    """The operator sets which purposes an agency may send and receive (offline, like ``init``)."""
    known = frozenset(load_catalogue().purposes)
    async with offline_context(config) as ctx:
        agency = await directory.set_agency_purposes(ctx, agency_id, send, receive, known)
    return {
        "agency": agency.id,
        "send_purposes": sorted(agency.send_purposes) if agency.send_purposes is not None else None,
        "receive_purposes": sorted(agency.receive_purposes) if agency.receive_purposes is not None else None,
    }


async def operator_register(
    config: Config, *, agency_id: str, display_name: str, roles: list[str], enrolment: Mapping[str, Any]
) -> dict[str, Any]:
    """The operator registers a member offline, with any role (auditor included) and the member's proof.

    Agency admins register members through the API but cannot grant roles that reach beyond their
    agency; this is the deployment operator's path for those, run on the server's own machine.
    """
    try:
        granted = [Role(r) for r in roles]
    except ValueError:
        raise InvalidRequest(f"Unknown role in {roles}; use: {', '.join(r.value for r in Role)}.") from None
    async with offline_context(config) as ctx:
        agency = await ctx.store.get_agency(agency_id)
        if agency is None:
            raise NotFound(f"No agency {agency_id} in this deployment's directory.")
        registered = await directory.bootstrap_member(
            ctx,
            agency,
            display_name,
            granted,
            crypto.b64decode(enrolment["signing_key"]["public"], what="signing key"),
            crypto.b64decode(enrolment["encryption_key"]["public"], what="encryption key"),
            proof=crypto.b64decode(enrolment["proof"], what="proof of possession"),
        )
    return directory.describe_member(registered.member, [registered.signing_key, registered.encryption_key])


#: The demo directory: a school, children's social care, police and a partnership's auditor.
DEMO_AGENCIES = (
    ("school", "Northfield Primary School", "education"),
    ("csc", "Northfield Children's Services", "children_social_care"),
    ("police", "Northfield Police", "police"),
    ("partnership", "Northfield Safeguarding Partnership", "local_authority_other"),
)
DEMO_MEMBERS = (
    (
        "school-dsl",
        "school",
        "Sam Patel (designated safeguarding lead)",
        ("safeguarding_lead", "practitioner"),
    ),
    ("school-head", "school", "Jo Morgan (headteacher)", ("manager",)),
    ("school-admin", "school", "School office admin", ("agency_admin",)),
    ("csc-duty", "csc", "Alex Reid (duty social worker)", ("practitioner",)),
    ("csc-manager", "csc", "Chris Okafor (team manager)", ("manager", "safeguarding_lead")),
    ("csc-admin", "csc", "Children's services admin", ("agency_admin",)),
    ("police-officer", "police", "DC Lee Brown (child abuse investigation)", ("practitioner",)),
    ("police-admin", "police", "Police systems admin", ("agency_admin",)),
    ("auditor", "partnership", "Partnership auditor", ("auditor",)),
)


async def seed_demo(config: Config, *, key_dir: Path, server: str) -> list[CreatedMember] | None:
    """Seed the demo directory and write each member's key file, unless the directory has members."""
    created: list[CreatedMember] = []
    async with offline_context(config) as ctx:
        if await ctx.store.count_members() > 0:
            return None
        agencies = {label: await directory.create_agency(ctx, name, kind) for label, name, kind in DEMO_AGENCIES}
        # The partnership's auditors read the ledger; the directory lets that agency exchange no packets.
        await directory.set_agency_purposes(ctx, agencies["partnership"].id, [], [], frozenset())
        for label, agency_label, name, roles in DEMO_MEMBERS:
            credentials = MemberCredentials.generate()
            agency = agencies[agency_label]
            registered = await directory.bootstrap_member(
                ctx,
                agency,
                name,
                [Role(r) for r in roles],
                credentials.signing.public_bytes,
                credentials.encryption.public_bytes,
            )
            path = key_dir / f"{label}.json"
            credentials.registered(registered.member.id, agency.id, server, name).save(path)
            created.append(CreatedMember(label, registered.member.id, agency.id, roles, path))
    # Members share the linkage key among themselves; the server never holds it.
    (key_dir / "linkage.key").unlink(missing_ok=True)
    crypto.write_private_file(key_dir / "linkage.key", (secrets.token_bytes(32).hex() + "\n").encode())
    return created
