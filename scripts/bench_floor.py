"""The bench's floor: the least a durable, signed submission costs on this machine, as a bare aiohttp app.

``POST /v1/packets`` does only what no correct implementation of the exchange can skip, and
nothing of the exchange's own code runs: it reads the same body the exchange is sent, checks the
request's RFC 9421 signature (one Ed25519 verify over the signature base rebuilt from the headers)
and the body's Content-Digest (SHA-256), parses the JSON, canonicalises the manifest once (RFC 8785)
and checks the sender's signature over it (the second Ed25519 verify), then inserts the packet as
one row into SQLite in WAL mode with ``synchronous=FULL`` and commits (one fsync per request, on a
single writer thread as aiosqlite does), and answers 201 once that is durable. No rules, no
schema, no nonce store, no ledger: ``scripts/bench_all.py`` reports the exchange's rate as a ratio
to this one, driven by the same load generator with the same packets.

Run: ``python scripts/bench_floor.py --port P --database F --keys KEYS.json`` (key id -> public hex).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import re
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rfc8785
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

_KEY_ID = re.compile(r';keyid="([^"]+)"')


def build(database: Path, public: dict[str, Ed25519PublicKey]) -> web.Application:
    db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS packets (id INTEGER PRIMARY KEY, packet_id TEXT NOT NULL, body BLOB NOT NULL)"
    )
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="floor-writer")

    def insert(packet_id: str, body: bytes) -> None:
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO packets (packet_id, body) VALUES (?, ?)", (packet_id, body))
        db.execute("COMMIT")

    async def submit(request: web.Request) -> web.Response:
        signature_input = request.headers.get("Signature-Input", "")
        signature = request.headers.get("Signature", "")
        digest = request.headers.get("Content-Digest", "")
        found = _KEY_ID.search(signature_input)
        key = public.get(found.group(1)) if found else None
        if key is None or not signature_input.startswith("exchange=") or not signature.startswith("exchange=:"):
            raise web.HTTPUnauthorized(text="unsigned or unknown key")
        base = (
            f'"@method": {request.method}\n"@path": {request.path}\n"@query": ?\n"content-digest": {digest}\n'
            f'"@signature-params": {signature_input.removeprefix("exchange=")}'
        )
        body = await request.read()
        try:
            key.verify(base64.b64decode(signature[10:-1]), base.encode())
        except (InvalidSignature, ValueError):
            raise web.HTTPUnauthorized(text="the request's signature does not verify") from None
        if digest != "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode() + ":":
            raise web.HTTPUnauthorized(text="the body does not match its Content-Digest")
        document = json.loads(body)
        manifest = document["manifest"]
        sender = public.get(manifest["sender"]["signing_key"])
        if sender is None:
            raise web.HTTPForbidden(text="unknown sender key")
        try:
            sender.verify(base64.b64decode(document["signature"]), rfc8785.dumps(manifest))
        except (InvalidSignature, ValueError):
            raise web.HTTPBadRequest(text="the manifest's signature does not verify") from None
        await asyncio.get_running_loop().run_in_executor(writer, insert, manifest["packet_id"], body)
        return web.json_response({"packet_id": manifest["packet_id"], "status": "stored"}, status=201)

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_post("/v1/packets", submit)
    app.router.add_get("/health", health)

    async def close(app: web.Application) -> None:
        writer.shutdown(wait=True)
        db.close()

    app.on_cleanup.append(close)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database", type=Path, required=True)
    parser.add_argument("--keys", type=Path, required=True, help="JSON: key id -> {public: hex, ...}")
    args = parser.parse_args()
    keys = json.loads(args.keys.read_text())
    public = {key_id: Ed25519PublicKey.from_public_bytes(bytes.fromhex(pair["public"]))
              for key_id, pair in keys.items()}
    web.run_app(build(args.database, public), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
