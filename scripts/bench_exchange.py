"""Benchmark the request path: signed reads and full packet submissions on a real server and SQLite file.

Prints requests per second for ``GET /v1/me`` (authentication, nonce write, one read) and for
``POST /v1/packets`` (schema, signature, digests, the sharing rules, one transaction with its
ledger events), and their ratio, so a change's effect shows regardless of the machine's noise.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from exchange.examples import referral
from tests.conftest import start_deployment


async def main(reads: int = 300, packets: int = 100) -> None:
    with tempfile.TemporaryDirectory() as root:
        deployment, close = await start_deployment(Path(root), rate_limit_per_minute=1_000_000)
        try:
            duty = deployment.credentials("csc-duty").member_id or ""
            async with deployment.client("school-dsl") as dsl:
                started = time.perf_counter()
                for _ in range(reads):
                    await dsl.me()
                read_rate = reads / (time.perf_counter() - started)
                sealed = [await dsl.prepare(referral([duty])) for _ in range(packets)]
                started = time.perf_counter()
                for packet in sealed:
                    await dsl.submit(packet)
                submit_rate = packets / (time.perf_counter() - started)
        finally:
            await close()
    print(f"signed GET /v1/me:        {read_rate:8.0f} requests/s")
    print(f"POST /v1/packets:         {submit_rate:8.0f} packets/s (sealing done beforehand, client side)")
    print(f"submission / read cost:   {read_rate / submit_rate:8.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
