"""A crowded directory: the demo members plus many others, seeded offline before the server starts.

Each extra member has keys of their own (a key id is its key's fingerprint, so keys cannot be shared).
Used by the directory tests and ``scripts/bench_directory.py``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from exchange import bootstrap
from exchange.config import Config
from exchange.domain import Role
from exchange.keyfile import MemberCredentials
from exchange.service import directory
from tests.conftest import Deployment, make_config, start_deployment


@dataclass(frozen=True)
class Crowd:
    """What :func:`seed_crowd` added: the extra agencies and members, by id."""

    agencies: tuple[str, ...]
    members: tuple[str, ...]


async def seed_crowd(
    config: Config,
    members: int,
    *,
    agencies: int = 5,
    roles: Sequence[Role] = (Role.PRACTITIONER,),
    into: str | None = None,
) -> Crowd:
    """Add ``members`` members spread over ``agencies`` new agencies (or all into agency ``into``)."""
    made: list[str] = []
    async with bootstrap.offline_context(config) as ctx:
        if into is not None:
            found = await ctx.store.get_agency(into)
            assert found is not None
            homes = [found]
        else:
            homes = [await directory.create_agency(ctx, f"Crowd agency {n}", "education") for n in range(agencies)]
        for n in range(members):
            keys = MemberCredentials.generate()
            registered = await directory.bootstrap_member(
                ctx,
                homes[n % len(homes)],
                f"Crowd member {n}",
                list(roles),
                keys.signing.public_bytes,
                keys.encryption.public_bytes,
            )
            made.append(registered.member.id)
    return Crowd(tuple(a.id for a in homes) if into is None else (), tuple(made))


async def start_crowded_deployment(
    root: Path, members: int, **overrides: object
) -> tuple[Deployment, Crowd, Callable[[], Awaitable[None]]]:
    """The demo directory plus ``members`` others in new agencies, behind a real server."""
    config = make_config(root, **overrides)
    await bootstrap.seed_demo(config, key_dir=root / "keys" / "demo", server="http://unused")
    crowd = await seed_crowd(config, members)
    # The demo members exist already, so start_deployment seeds nothing more and keeps their key files.
    deployment, close = await start_deployment(root, **overrides)
    return deployment, crowd, close
