"""Measure what a send costs in directory traffic on a large directory (issue 8: "fetched whole").

Seeds the demo directory plus ``--members`` extra members (spread over ``--agencies`` extra agencies,
each with its own keys), then sends packets to one named member and to an agency inbox, and prints,
per send, the bytes the client read from ``GET /v1/directory``, how many directory requests it made,
and the time of the whole send (resolving, sealing, submitting).

    PYTHONPATH=. python scripts/bench_directory.py --members 3000 --sends 5
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from exchange import bootstrap
from exchange.client import ExchangeClient
from exchange.domain import Role
from exchange.examples import referral
from exchange.keyfile import MemberCredentials
from exchange.service import directory
from exchange.web.app import build_app
from tests.conftest import Clock, make_config


class Meter:
    """Counts the response bytes and requests of ``GET /v1/directory`` seen by one client session."""

    def __init__(self) -> None:
        self.bytes = 0
        self.requests = 0
        self.trace = aiohttp.TraceConfig()
        self.trace.on_request_start.append(self._start)
        self.trace.on_response_chunk_received.append(self._chunk)

    def _is_directory(self, url: Any) -> bool:
        return str(url.path).startswith("/v1/directory")

    async def _start(self, session: Any, context: SimpleNamespace, params: Any) -> None:
        context.directory = self._is_directory(params.url)
        if context.directory:
            self.requests += 1

    async def _chunk(self, session: Any, context: SimpleNamespace, params: Any) -> None:
        if getattr(context, "directory", False):
            self.bytes += len(params.chunk)


class MeteredClient(ExchangeClient):
    """The SDK client with a trace on its session (the same requests, counted)."""

    meter: Meter

    async def __aenter__(self) -> MeteredClient:
        self.meter = Meter()
        self._session = aiohttp.ClientSession(trace_configs=[self.meter.trace])
        return self


async def seed(root: Path, members: int, agencies: int) -> tuple[Any, float]:
    config = make_config(root, rate_limit_per_minute=1_000_000)
    await bootstrap.seed_demo(config, key_dir=root / "keys" / "demo", server="http://unused")
    started = time.perf_counter()
    async with bootstrap.offline_context(config) as ctx:
        made = [await directory.create_agency(ctx, f"Bench agency {n}", "education") for n in range(agencies)]
        for n in range(members):
            keys = MemberCredentials.generate()
            await directory.bootstrap_member(
                ctx,
                made[n % agencies],
                f"Bench member {n}",
                [Role.PRACTITIONER],
                keys.signing.public_bytes,
                keys.encryption.public_bytes,
            )
    return config, time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=3000)
    parser.add_argument("--agencies", type=int, default=30)
    parser.add_argument("--sends", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config, seeded = await seed(root, args.members, args.agencies)
        print(f"seeded {args.members} extra members in {args.agencies} agencies in {seeded:.1f} s")
        from aiohttp.test_utils import TestServer

        server = TestServer(build_app(config, clock=Clock(), console=False), host="127.0.0.1", port=0)
        await server.start_server()
        try:
            url = str(server.make_url("")).rstrip("/")
            keys = root / "keys" / "demo"
            duty = MemberCredentials.load(keys / "csc-duty.json")
            sender = MemberCredentials.load(keys / "school-dsl.json")
            linkage = bytes.fromhex((keys / "linkage.key").read_text().strip())
            for label, to in (("one named member", [duty.member_id]), ("agency inbox", [f"agency:{duty.agency_id}"])):
                async with MeteredClient(url, sender, linkage_key=linkage) as client:
                    started = time.perf_counter()
                    for _ in range(args.sends):
                        await client.send(referral([str(t) for t in to]))
                    elapsed = (time.perf_counter() - started) / args.sends
                    meter = client.meter
                print(
                    f"send to {label:17s} {meter.bytes / args.sends:12,.0f} directory bytes/send"
                    f"  {meter.requests / args.sends:4.1f} directory requests/send  {elapsed * 1000:8.1f} ms/send"
                )
        finally:
            await server.close()


if __name__ == "__main__":
    asyncio.run(main())
