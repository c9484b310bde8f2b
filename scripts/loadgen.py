"""The bench's load generator: a lean process of its own that drives a server with pre-sealed packets.

``scripts/bench_all.py`` starts one (or several) per phase. Everything that can be done before the
clock starts is: the packets were sealed by the SDK beforehand, their bodies are already encoded
and their Content-Digest computed, the acknowledgements are already signed. Only what must be
fresh is done per request: the RFC 9421 signature (its ``nonce`` is single-use, its ``created``
must be recent) with a bare Ed25519 sign over a signature base built from a template. At start the
first item's headers are checked by the project's own verifier (``exchange.httpsig``), so the
short cut cannot drift from what the server accepts.

Modes (``--mode``):

* ``submit``: ``POST /v1/packets`` (the floor route answers the same path);
* ``loop``: the whole exchange: the sender submits, the recipient fetches the packet
  (``GET /v1/packets/{id}``) and acknowledges it (``POST .../acknowledgement``); one latency per loop.

It reads items ``[--start, --start + --count)`` of the JSON-lines ``--items`` file, prints
``ready`` once prepared, waits for ``go`` on stdin, runs ``--concurrency`` workers until the items
run out or ``--max-seconds`` pass (no new item is begun after that), then writes its figures to
``--out`` (JSON): items done, elapsed time, each latency, refusals by status.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

_PARAMS = '("@method" "@path" "@query" "content-digest")'
_TAG = "safeguarding-exchange"


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` of ``body`` with SHA-256, as the SDK sends it."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":"


EMPTY_DIGEST = content_digest(b"")


class Signer:
    """One member's RFC 9421 signer: the signature base from a template, one Ed25519 sign per request."""

    __slots__ = ("key", "key_id")

    def __init__(self, key_id: str, private: bytes) -> None:
        self.key_id = key_id
        self.key = Ed25519PrivateKey.from_private_bytes(private)

    def headers(self, method: str, path: str, digest: str) -> dict[str, str]:
        params = (
            f'{_PARAMS};created={int(time.time())};keyid="{self.key_id}";alg="ed25519";'
            f'nonce="{secrets.token_urlsafe(18)}";tag="{_TAG}"'
        )
        base = (
            f'"@method": {method}\n"@path": {path}\n"@query": ?\n"content-digest": {digest}\n'
            f'"@signature-params": {params}'
        )
        signature = base64.b64encode(self.key.sign(base.encode())).decode()
        return {
            "Content-Digest": digest,
            "Signature-Input": "exchange=" + params,
            "Signature": f"exchange=:{signature}:",
        }


@dataclass(frozen=True)
class Item:
    """One pre-sealed packet: who sends it, who acknowledges it, its encoded body and acknowledgement."""

    sender: Signer
    recipient: Signer
    packet_id: str
    body: bytes
    digest: str
    ack: bytes
    ack_digest: str


def load_items(path: Path, keys: dict[str, Signer], start: int, count: int) -> list[Item]:
    items = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle):
            if number < start:
                continue
            if number >= start + count:
                break
            line = json.loads(raw)
            body, ack = line["body"].encode(), line["ack"].encode()
            items.append(
                Item(keys[line["sender"]], keys[line["recipient"]], line["packet_id"], body,
                     content_digest(body), ack, content_digest(ack))
            )
    return items


def self_check(url: str, item: Item, public: bytes) -> None:
    """Check this module's headers with the server's own verifier, before any load."""
    from datetime import UTC, datetime, timedelta

    from exchange import httpsig

    headers = item.sender.headers("POST", "/v1/packets", item.digest)
    verified = httpsig.verify_signature(
        "POST", url + "/v1/packets", headers, public,
        now=datetime.now(UTC), max_age=timedelta(seconds=300), clock_skew=timedelta(seconds=5),
    )
    httpsig.verify_content_digest(verified, item.body)


class Run:
    """What one phase observed."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.refused: dict[str, int] = {}
        self.examples: list[str] = []

    def refusal(self, what: str, status: int, text: str) -> None:
        key = f"{what} {status}"
        self.refused[key] = self.refused.get(key, 0) + 1
        if len(self.examples) < 5:
            self.examples.append(f"{key}: {text[:300]}")


async def post(
    session: aiohttp.ClientSession, url: str, path: str, signer: Signer, body: bytes, digest: str
) -> tuple[int, bytes]:
    headers = signer.headers("POST", path, digest)
    headers["Content-Type"] = "application/json"
    async with session.post(url + path, data=body, headers=headers) as answer:
        return answer.status, await answer.read()


async def get(session: aiohttp.ClientSession, url: str, path: str, signer: Signer) -> tuple[int, bytes]:
    async with session.get(url + path, headers=signer.headers("GET", path, EMPTY_DIGEST)) as answer:
        return answer.status, await answer.read()


async def one(session: aiohttp.ClientSession, url: str, mode: str, item: Item, run: Run) -> bool:
    """Submit one packet (and, in the loop, fetch and acknowledge it); False if anything was refused."""
    status, text = await post(session, url, "/v1/packets", item.sender, item.body, item.digest)
    if status not in (201, 202):
        run.refusal("submit", status, text.decode("utf-8", "replace"))
        return False
    if mode != "loop":
        return True
    path = f"/v1/packets/{item.packet_id}"
    status, text = await get(session, url, path, item.recipient)
    if status != 200:
        run.refusal("fetch", status, text.decode("utf-8", "replace"))
        return False
    status, text = await post(session, url, path + "/acknowledgement", item.recipient, item.ack, item.ack_digest)
    if status not in (200, 201):
        run.refusal("acknowledge", status, text.decode("utf-8", "replace"))
        return False
    return True


async def drive(url: str, mode: str, items: list[Item], concurrency: int, max_seconds: float) -> dict[str, Any]:
    run = Run()
    position = 0
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=300)) as session:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        started = time.monotonic()
        cpu = time.process_time()
        deadline = started + max_seconds

        async def worker() -> None:
            nonlocal position
            while position < len(items) and time.monotonic() < deadline:
                item = items[position]
                position += 1
                began = time.perf_counter()
                ok = await one(session, url, mode, item, run)
                if ok:
                    run.latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        ended = time.monotonic()
        cpu = time.process_time() - cpu
    return {
        "mode": mode,
        "concurrency": concurrency,
        "begun": position,
        "done": len(run.latencies),
        "started": started,
        "ended": ended,
        "elapsed": ended - started,
        "cpu_seconds": cpu,
        "latencies_ms": [round(s * 1000, 3) for s in run.latencies],
        "refused": run.refused,
        "examples": run.examples,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--mode", choices=("submit", "loop"), required=True)
    parser.add_argument("--items", type=Path, required=True, help="JSON lines: sender, recipient, packet_id, body, ack")
    parser.add_argument("--keys", type=Path, required=True, help="JSON: key id -> {private, public} (hex)")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--self-check", action="store_true", help="check the first item's headers with exchange.httpsig"
    )
    args = parser.parse_args()
    raw_keys = json.loads(args.keys.read_text())
    keys = {key_id: Signer(key_id, bytes.fromhex(pair["private"])) for key_id, pair in raw_keys.items()}
    items = load_items(args.items, keys, args.start, args.count)
    if not items:
        raise SystemExit("no items in the given range")
    if args.self_check:
        self_check(args.url, items[0], bytes.fromhex(raw_keys[items[0].sender.key_id]["public"]))
    result = asyncio.run(drive(args.url, args.mode, items, args.concurrency, args.max_seconds))
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
