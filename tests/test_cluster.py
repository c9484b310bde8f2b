"""Several instances behind a real load balancer on PostgreSQL: an instance killed mid-run loses nothing.

``scripts/cluster``'s :class:`Cluster` starts two ``exchange serve --database URL`` processes on a
fresh database of the throwaway PostgreSQL cluster and HAProxy in front; senders and a recipient
work through the balancer while the instance holding the leases is SIGKILLed.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path

import aiohttp
import pytest
from cluster import Cluster  # scripts/ is on sys.path (tests/pg_fixtures.py)
from throwaway_pg import ThrowawayPostgres

from exchange import crypto
from exchange.client import ApiError, ExchangeClient
from exchange.examples import referral
from exchange.keyfile import MemberCredentials
from exchange.ledger import leaf_hash, root_hash, verify_tree_head
from exchange.store import open_store

#: Transport faults a client sees while an instance dies under it (the balancer answers 502/503 too).
_LOST = (ApiError, aiohttp.ClientError, asyncio.TimeoutError)


def _client(url: str, keys: Path, label: str) -> ExchangeClient:
    linkage = bytes.fromhex((keys / "linkage.key").read_text().strip())
    return ExchangeClient(url, MemberCredentials.load(keys / f"{label}.json"), linkage_key=linkage)


async def _senders(url: str, keys: Path, to: str, sent: list[str], stop: asyncio.Event) -> int:
    failed = 0
    async with _client(url, keys, "school-dsl") as dsl:
        while not stop.is_set():
            try:
                sent.append((await dsl.send(referral([to])))["packet_id"])
            except _LOST:
                failed += 1
                await asyncio.sleep(0.05)
    return failed


async def _acknowledger(url: str, keys: Path, acked: list[str], stop: asyncio.Event) -> int:
    failed = 0
    async with _client(url, keys, "csc-duty") as duty:
        while not stop.is_set():
            try:
                waiting = [p["packet_id"] for p in await duty.inbox("delivered") if p["packet_id"] not in acked]
                for packet_id in waiting[:5]:
                    await duty.acknowledge(packet_id)
                    acked.append(packet_id)
            except _LOST:
                failed += 1
            await asyncio.sleep(0.05)
    return failed


async def test_an_instance_killed_mid_run_loses_nothing_and_the_survivor_signs(
    postgres_cluster: ThrowawayPostgres, haproxy_binary: Path, tmp_path: Path
) -> None:
    """Every 2xx'd submission and acknowledgement is stored once, the ledger is one gap-free sequence whose
    root the survivor's signed head vouches for, and the survivor took over the leases."""
    options = ["--rate-limit-per-minute", "100000"]
    with Cluster(2, postgres=postgres_cluster, work=tmp_path, serve_options=options) as cluster:
        duty = MemberCredentials.load(cluster.demo_keys / "csc-duty.json").member_id or ""
        leaders = cluster.leaders()
        assert len(leaders["heads"]) == 1, leaders
        victim = cluster.instances[leaders["heads"][0] - 1]
        survivor = next(i for i in cluster.instances if i is not victim)
        sent: list[str] = []
        acked: list[str] = []
        stop = asyncio.Event()
        work = [
            *(asyncio.create_task(_senders(cluster.url, cluster.demo_keys, duty, sent, stop)) for _ in range(4)),
            asyncio.create_task(_acknowledger(cluster.url, cluster.demo_keys, acked, stop)),
        ]
        await asyncio.sleep(3)
        before_kill = len(sent)
        victim.kill()
        await asyncio.sleep(4)
        stop.set()
        await asyncio.gather(*work)
        assert before_kill > 0 and len(sent) > before_kill, "submissions went on through the survivor"
        assert acked, "acknowledgements went through"

        server_key = crypto.b64decode((cluster.keys_dir / "server.ed25519.pub").read_text().strip())
        store = await open_store(cluster.database)
        try:
            for packet_id in sent:
                assert await store.get_packet(packet_id) is not None, packet_id
            size = await store.ledger_size()
            rows = await store.ledger_entries(0, size)
            assert [seq for seq, _, _ in rows] == list(range(size)), "one gap-free sequence"
            entries = [json.loads(entry) for _, entry, _ in rows]
            assert all(leaf == leaf_hash(entry) for _, entry, leaf in rows)
            submitted = Counter(e["packet"] for e in entries if e["type"] == "packet.submitted")
            acknowledged = Counter(e["packet"] for e in entries if e["type"] == "packet.acknowledged")
            assert all(submitted[p] == 1 for p in sent), "each 2xx'd submission is in the ledger once"
            assert all(acknowledged[p] == 1 for p in acked), "each 2xx'd acknowledgement is in the ledger once"
            assert max(submitted.values()) == 1 and max(acknowledged.values(), default=1) == 1
            # The survivor takes the heads lease once the dead one's lapses, and signs the whole ledger.
            for _ in range(200):
                head = await store.latest_tree_head()
                if head is not None and head.size >= size:
                    break
                await asyncio.sleep(0.1)
            assert head is not None and head.size >= size, "the survivor signs heads"
            verify_tree_head(head, server_key)
            leaves = [leaf for _, _, leaf in await store.ledger_entries(0, head.size)]
            assert head.root_hash == root_hash(leaves)
        finally:
            await store.close()
        assert cluster.leaders()["heads"] == [survivor.number]


@pytest.mark.parametrize("instances", [1])
async def test_scripts_cluster_answers_through_the_balancer(
    postgres_cluster: ThrowawayPostgres, haproxy_binary: Path, tmp_path: Path, instances: int
) -> None:
    """The balancer's /health is an instance's: its id, and the leases it holds."""
    with Cluster(instances, postgres=postgres_cluster, work=tmp_path) as cluster:
        async with aiohttp.ClientSession() as session, session.get(f"{cluster.url}/health") as answer:
            health = await answer.json()
        assert answer.status == 200 and health["instance"].startswith("inst_")
        assert health["leader"]["heads"] is True
