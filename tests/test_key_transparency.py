"""Key transparency: a substituted key is caught by the sender's client or by the victim's monitor."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from exchange import bootstrap, crypto
from exchange.client import ApiError, ExchangeClient
from exchange.domain import Event, KeyUse, MemberKey, iso, utc_now
from exchange.errors import KeyTransparencyError, LedgerProofError
from exchange.examples import referral
from exchange.keyfile import MemberCredentials
from exchange.ledger import TreeHead
from exchange.transparency import TrustState
from tests.conftest import Deployment
from tests.test_cli import cli, cli_json

#: These run on PostgreSQL too: scripts/test runs them again with EXCHANGE_TEST_ENGINE=postgres.
pytestmark = pytest.mark.both_engines


def _planted_key(member_id: str) -> MemberKey:
    """An encryption key the attacker holds, put under the victim's name."""
    public = MemberCredentials.generate().encryption.public_bytes
    now = iso(utc_now())
    key_id = crypto.check_encryption_public_key(public)
    return MemberKey(key_id, member_id, KeyUse.ENCRYPTION, public, now, None, None, now)


async def test_attack_key_planted_without_a_ledger_entry_is_refused_by_the_sender(deployment: Deployment) -> None:
    """A key written straight into the database (a compromised server or DBA) is in no ledger entry: the
    sender's client refuses to seal to it, so nothing reaches the attacker."""
    victim = deployment.credentials("csc-duty")
    assert victim.member_id is not None
    async with bootstrap.offline_context(deployment.config) as ctx, ctx.store.write() as tx:
        await tx.insert_key(_planted_key(victim.member_id))
    async with deployment.client("school-dsl") as dsl:
        with pytest.raises(KeyTransparencyError) as caught:
            await dsl.send(referral([victim.member_id]))
        assert "holds no such encryption key" in caught.value.detail
        assert await dsl.outbox() == []


async def test_attack_key_planted_with_a_ledger_entry_is_seen_by_the_victims_monitor(
    deployment: Deployment, tmp_path: Path
) -> None:
    """A planted key that senders would accept must be in the ledger, where ``exchange keys monitor``
    shows the victim a key they did not make (exit 1, the key named); before it, the monitor passes."""
    key_file = tmp_path / "victim.json"
    key_file.write_bytes((deployment.key_dir / "csc-duty.json").read_bytes())
    key_file.chmod(0o600)
    mine = ["--key", str(key_file), "--server", deployment.url]
    clean = await cli_json("keys", "monitor", *mine)
    assert all(k["yours"] for k in clean["keys"]) and len(clean["keys"]) == 2
    assert (tmp_path / "victim.trust.json").exists()

    victim = deployment.credentials("csc-duty")
    assert victim.member_id is not None
    planted = _planted_key(victim.member_id)
    async with bootstrap.offline_context(deployment.config) as ctx, ctx.change() as change:
        await change.tx.insert_key(planted)
        details = {"member": victim.member_id, "key": planted.key_id, "use": "encryption"}
        await change.record(Event("key.added", None, None, details=details))
    _, err = await cli("keys", "monitor", *mine, expect=1)
    assert planted.key_id in err and "does not know" in err


async def test_the_sender_checks_each_recipient_key_once(deployment: Deployment) -> None:
    """An honest send verifies the recipient's key against the ledger and remembers it, with the server key pinned."""
    trust = TrustState()
    victim = deployment.credentials("csc-duty")
    async with deployment.client("school-dsl") as client:
        client.trust = trust
        await client.send(referral([victim.member_id or ""]))
    assert trust.checked == {victim.encryption.key_id: victim.member_id}
    assert trust.server_key == deployment.server_public_key
    assert trust.head is not None and trust.head.size > 0


async def test_attack_a_changed_server_key_is_refused(deployment: Deployment) -> None:
    """A client that pinned one head-signing key refuses a history signed under another."""
    trust = TrustState(server_key=crypto.SigningKey.generate().public_bytes)
    async with ExchangeClient(deployment.url, deployment.credentials("school-dsl"), trust=trust) as client:
        with pytest.raises(KeyTransparencyError) as caught:
            await client.key_history(deployment.credentials("csc-duty").member_id or "")
    assert "different key" in caught.value.detail


async def test_attack_a_rewound_ledger_is_refused(deployment: Deployment, tmp_path: Path) -> None:
    """A trust file that saw a larger head than the server now shows catches the rewind (or split view)."""
    async with deployment.client("school-dsl") as client:
        history = await client.key_history(deployment.credentials("csc-duty").member_id or "")
    doc = history.head.to_json() | {"size": history.head.size + 5}
    trust = TrustState(server_key=deployment.server_public_key)
    trust.head = TreeHead.from_json(doc)
    async with ExchangeClient(deployment.url, deployment.credentials("school-dsl"), trust=trust) as client:
        with pytest.raises(LedgerProofError, match="rewound"):
            await client.key_history(deployment.credentials("csc-duty").member_id or "")


async def test_race_concurrent_key_checks_while_the_ledger_grows(deployment: Deployment) -> None:
    """Key histories fetched at once by one client, while the ledger grows, all verify: each asks for
    consistency from the head the previous one kept (a race once judged a proof against a newer head)."""
    members = [deployment.credentials(label).member_id or "" for label in ("csc-duty", "csc-manager", "school-head")]
    async with deployment.client("school-dsl") as dsl, deployment.client("csc-duty") as writer:
        for _ in range(12):
            checks = [dsl.key_history(members[i % 3]) for i in range(6)]
            _, *histories = await asyncio.gather(writer.send(referral([members[1]])), *checks)
            assert all(len(history.keys) == 2 for history in histories)
            await asyncio.sleep(0.03)


async def test_key_history_of_an_unknown_member_is_404(deployment: Deployment) -> None:
    """Asking for a member who does not exist is a plain 404 problem."""
    async with deployment.client("school-dsl") as client:
        with pytest.raises(ApiError) as missing:
            await client.request("GET", "/v1/members/mem_000000000000000000000000/key-history")
    assert missing.value.http_status == 404


def test_trust_file_round_trips(tmp_path: Path) -> None:
    """The trust state saves (0600) and loads back the same pinned key and checked keys."""
    path = tmp_path / "me.trust.json"
    state = TrustState(server_key=b"k" * 32, checked={"a": "mem_1"}, path=path)
    state.save()
    assert path.stat().st_mode & 0o777 == 0o600
    again = TrustState.load(path)
    assert (again.server_key, again.checked) == (b"k" * 32, {"a": "mem_1"})
    path.write_text(json.dumps({"format": "nope"}))
    with pytest.raises(KeyTransparencyError):
        TrustState.load(path)
