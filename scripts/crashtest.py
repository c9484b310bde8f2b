"""Crash test: SIGKILL a real ``exchange serve`` under load, restart it on the same data, lose nothing.

Each round starts the server (the demo directory, on one data folder kept across rounds), runs
concurrent SDK clients against it — the school's safeguarding lead sends referrals to children's
social care (a third of them without consent, so they wait for the headteacher's approval), the
headteacher approves them, the duty social worker and the team manager acknowledge what reaches
them — and SIGKILLs the server at a random moment. A write whose answer was a 2xx is an
*acknowledged write*; one cut off by the kill is *in doubt* (it may or may not have committed, and
either is correct). After the last round the server is started once more and:

* every acknowledged submission is in the sender's outbox, opens (verifies and decrypts) for each
  recipient, and holds the body that was sealed (a random token in its narrative);
* every acknowledged approval shows in the packet the recipient opens, signed by the headteacher;
* every acknowledged acknowledgement shows in the sender's outbox as that recipient's state;
* the ledger entry at each acknowledged write's receipt (seq, leaf hash) is that very entry;
* every other packet the server holds (in-doubt ones that did commit) opens too: nothing half-written;
* the ledger export verifies offline with ``exchange ledger verify --log`` against the record log
  (no gaps, every head, every entry in the log), and SQLite's integrity check passes.

A 5xx or any unexpected refusal during the load is a failure too. The last line printed is
``crash: R rounds, N acknowledged writes, L lost``; the exit status is non-zero on any loss or
failure. ``--rounds`` (default 20) and ``--seed`` make a run repeatable in its choices.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from exchange.client import ApiError, ExchangeClient
from exchange.examples import referral, referral_without_consent
from exchange.keyfile import MemberCredentials

T = TypeVar("T")

#: What a connection cut by the kill looks like to a client.
_CUT = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)
RECIPIENTS = ("csc-duty", "csc-manager")


@dataclass
class Write:
    """One write the server answered with a 2xx: what it was, and the ledger receipt it gave."""

    kind: str  # "submit", "approve" or "acknowledge"
    packet_id: str
    member: str
    seq: int
    leaf_hash: str
    token: str = ""
    manifest_digest: str = ""
    status: str = ""


@dataclass
class Run:
    """Everything the rounds observed."""

    writes: list[Write] = field(default_factory=list)
    in_doubt: list[tuple[str, str]] = field(default_factory=list)  # (kind, packet id)
    failures: list[str] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)  # expected refusals by code (429, 409 ...)

    def refusal(self, code: str) -> None:
        self.refused[code] = self.refused.get(code, 0) + 1


class Server:
    """One ``exchange serve`` process on the crash test's data folder and port."""

    def __init__(self, work: Path, port: int) -> None:
        self.work = work
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.work / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "exchange.cli.main", "serve",
                "--data-dir", str(self.work / "var"),
                "--keys-dir", str(self.work / "keys"),
                "--port", str(self.port),
                "--seed-demo",
                # The check opens every packet as each recipient, far past a member's default 600
                # requests a minute; what is under test is durability, not the rate limit.
                "--rate-limit-per-minute", "1000000",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )
        log.close()

    async def wait_ready(self, within: float = 60.0) -> None:
        deadline = time.monotonic() + within
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise SystemExit(f"the server exited during start-up (see {self.work / 'server.log'})")
                with contextlib.suppress(*_CUT):
                    async with session.get(self.url + "/health", timeout=aiohttp.ClientTimeout(total=2)) as answer:
                        if answer.status == 200:
                            return
                await asyncio.sleep(0.05)
        raise SystemExit("the server did not answer /health in time")

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Members:
    """The demo members' key files (written by the server's first start) and SDK clients for them."""

    def __init__(self, work: Path, url: str) -> None:
        self.keys = work / "keys" / "demo"
        self.url = url
        self.linkage = bytes.fromhex((self.keys / "linkage.key").read_text().strip())
        self.credentials = {label: MemberCredentials.load(self.keys / f"{label}.json") for label in (
            "school-dsl", "school-head", "auditor", *RECIPIENTS
        )}

    def client(self, label: str) -> ExchangeClient:
        return ExchangeClient(self.url, self.credentials[label], linkage_key=self.linkage)

    def id(self, label: str) -> str:
        return self.credentials[label].member_id or ""


async def patiently(run: Run, call: Callable[[], Awaitable[T]]) -> T:
    """Call, waiting out rate limits (429) and read-only answers (503 with Retry-After)."""
    while True:
        try:
            return await call()
        except ApiError as error:
            if error.http_status not in (429, 503) or (error.http_status == 503 and error.retry_after is None):
                raise
            run.refusal(error.problem_code)
            await asyncio.sleep(min(error.retry_after or 1, 2))


# ---------------------------------------------------------------------------- the load


async def sender(members: Members, run: Run, rng: random.Random, stop: asyncio.Event) -> None:
    """Seal and submit referrals, a third of them without consent, until the server goes away."""
    to = [members.id(label) for label in RECIPIENTS]
    async with members.client("school-dsl") as dsl:
        while not stop.is_set():
            token = secrets.token_hex(8)
            packet = referral_without_consent(to) if rng.random() < 1 / 3 else referral(to)
            packet["narrative"] = f"Crash test referral {token}."
            try:
                sealed = await patiently(run, partial(dsl.prepare, packet))
            except _CUT:
                return
            packet_id = sealed.manifest["packet_id"]
            try:
                answer = await patiently(run, partial(dsl.submit, sealed))
            except _CUT:
                run.in_doubt.append(("submit", packet_id))
                return
            except ApiError as error:
                run.failures.append(f"submit {packet_id}: {error.http_status} {error.problem_code}")
                continue
            run.writes.append(
                Write(
                    "submit", packet_id, "school-dsl", answer["ledger"]["seq"], answer["ledger"]["leaf_hash"],
                    token=token, manifest_digest=sealed.manifest_digest, status=answer["status"],
                )
            )


async def approver(members: Members, run: Run, stop: asyncio.Event) -> None:
    """Approve every packet in the headteacher's queue."""
    async with members.client("school-head") as head:
        while not stop.is_set():
            try:
                queue = (await patiently(run, lambda: head.request("GET", "/v1/approvals")))["packets"]
            except _CUT:
                return
            for item in queue:
                packet_id = item["packet_id"]
                decision = head.approval_for(packet_id, item["manifest_digest"])
                try:
                    answer = await patiently(run, partial(head.request, "POST", f"/v1/approvals/{packet_id}", decision))
                except _CUT:
                    run.in_doubt.append(("approve", packet_id))
                    return
                except ApiError as error:
                    if error.http_status == 409:  # an in-doubt approval that did commit, decided already
                        run.refusal(error.problem_code)
                        continue
                    run.failures.append(f"approve {packet_id}: {error.http_status} {error.problem_code}")
                    continue
                run.writes.append(Write("approve", packet_id, "school-head", answer["ledger"]["seq"],
                                        answer["ledger"]["leaf_hash"]))
            if not queue:
                await asyncio.sleep(0.02)


async def acknowledger(members: Members, label: str, run: Run, stop: asyncio.Event) -> None:
    """Open (verify, decrypt) and acknowledge every packet delivered to ``label``."""
    async with members.client(label) as member:
        while not stop.is_set():
            try:
                waiting = await patiently(run, lambda: member.inbox(state="delivered,opened"))
            except _CUT:
                return
            for item in waiting:
                packet_id = item["packet_id"]
                try:
                    answer = await patiently(run, partial(member.acknowledge, packet_id))
                except _CUT:
                    run.in_doubt.append(("acknowledge", packet_id))
                    return
                except ApiError as error:
                    if error.http_status == 409:
                        run.refusal(error.problem_code)
                        continue
                    run.failures.append(f"acknowledge {packet_id} by {label}: {error.http_status} {error.problem_code}")
                    continue
                run.writes.append(Write("acknowledge", packet_id, label, answer["ledger"]["seq"],
                                        answer["ledger"]["leaf_hash"]))
            if not waiting:
                await asyncio.sleep(0.02)


async def one_round(
    server: Server, run: Run, rng: random.Random, senders: int, shortest: float, longest: float
) -> float:
    """Start the server, load it, SIGKILL it after a random time; return that time."""
    server.start()
    await server.wait_ready()
    members = Members(server.work, server.url)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(sender(members, run, rng, stop)) for _ in range(senders)]
    tasks.append(asyncio.create_task(approver(members, run, stop)))
    tasks += [asyncio.create_task(acknowledger(members, label, run, stop)) for label in RECIPIENTS]
    delay = rng.uniform(shortest, longest)
    await asyncio.sleep(delay)
    server.kill()
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=30)
    for task in pending:
        task.cancel()
    for task in done:
        if task.exception() is not None:
            run.failures.append(f"a client failed: {task.exception()!r}")
    return delay


# ---------------------------------------------------------------------------- the checks


def _export_leaves(export: Path) -> dict[int, str]:
    leaves = {}
    for raw in export.read_text().splitlines():
        line = json.loads(raw)
        if line.get("kind") == "entry":
            leaves[line["seq"]] = hashlib.sha256(b"\x00" + base64.b64decode(line["entry"])).hexdigest()
    return leaves


async def check(server: Server, run: Run) -> tuple[int, dict[str, Any]]:
    """After the rounds: count the acknowledged writes that are not all there; gather the figures."""
    members = Members(server.work, server.url)
    lost: set[int] = set()
    figures: dict[str, Any] = {}
    # Packets still awaiting approval are approved now, so that every packet can be opened.
    async with members.client("school-head") as head:
        for item in (await patiently(run, lambda: head.request("GET", "/v1/approvals")))["packets"]:
            decision = head.approval_for(item["packet_id"], item["manifest_digest"])
            await patiently(run, partial(head.request, "POST", f"/v1/approvals/{item['packet_id']}", decision))
    async with members.client("school-dsl") as dsl:
        outbox = {p["packet_id"]: p for p in await patiently(run, dsl.outbox)}
    opened: dict[tuple[str, str], Any] = {}
    for label in RECIPIENTS:
        async with members.client(label) as member:
            for packet_id in outbox:
                try:
                    opened[(label, packet_id)] = await patiently(run, partial(member.open, packet_id))
                except ApiError as error:
                    run.failures.append(f"packet {packet_id} does not open for {label}: {error.problem_code}")
    async with members.client("auditor") as auditor:
        # Wait for a signed head over every receipt (an auditor's read is itself recorded, so the
        # ledger never stops growing while one waits for a head over all of it).
        wanted = max((write.seq for write in run.writes), default=-1) + 1
        for _ in range(100):
            head_now = await patiently(run, lambda: auditor.request("GET", "/v1/ledger/head"))
            if head_now["head"]["size"] >= wanted:
                break
            await asyncio.sleep(0.1)
        export = server.work / "ledger-export.jsonl"
        export.write_text(await patiently(run, lambda: auditor.request_text("GET", "/v1/ledger/export")))
    leaves = _export_leaves(export)
    for number, write in enumerate(run.writes):
        if leaves.get(write.seq) != write.leaf_hash:
            run.failures.append(f"{write.kind} {write.packet_id}: its receipt names seq {write.seq}, not in the ledger")
            lost.add(number)
        packet = outbox.get(write.packet_id)
        if packet is None:
            run.failures.append(f"{write.kind} {write.packet_id}: the packet is not in the sender's outbox")
            lost.add(number)
            continue
        if write.kind == "submit":
            for label in RECIPIENTS:
                got = opened.get((label, write.packet_id))
                if got is None or got.manifest_digest != write.manifest_digest or write.token not in json.dumps(
                    got.body
                ):
                    run.failures.append(f"submit {write.packet_id}: not intact for {label}")
                    lost.add(number)
        elif write.kind == "approve":
            got = opened.get((RECIPIENTS[0], write.packet_id))
            if got is None or got.approval is None or got.approval.get("approver") != members.id("school-head"):
                run.failures.append(f"approve {write.packet_id}: the approval is not recorded")
                lost.add(number)
        else:
            states = {r["member"]: r for r in packet["recipients"]}
            state = states.get(members.id(write.member), {})
            if state.get("acknowledged_at") is None:
                run.failures.append(f"acknowledge {write.packet_id} by {write.member}: not recorded")
                lost.add(number)
    verified = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "exchange.cli.main", "ledger", "verify", "--json",
            "--export", str(export),
            "--server-key", str(server.work / "keys" / "server.ed25519.pub"),
            "--log", str(server.work / "var" / "record.jsonl"),
        ],
        capture_output=True, text=True, check=False, timeout=300,
    )
    if verified.returncode != 0:
        run.failures.append(f"ledger verify --log failed: {(verified.stdout + verified.stderr).strip()[:800]}")
    else:
        report = json.loads(verified.stdout)
        figures.update({k: report[k] for k in (
            "entries", "log_entries_checked", "log_orphaned_entries", "log_torn_lines", "log_entries_beyond_export"
        )})
    figures["packets"] = len(outbox)
    figures["in_doubt_committed"] = sum(
        1 for kind, packet_id in run.in_doubt if kind == "submit" and packet_id in outbox
    )
    return len(lost), figures


def integrity(database: Path) -> str:
    """SQLite's own check of the database file, read only, with the server stopped."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        rows = db.execute("PRAGMA integrity_check").fetchall()
        problems = db.execute("PRAGMA foreign_key_check").fetchall()
    text = ", ".join(str(row[0]) for row in rows)
    return text if not problems else f"{text}; foreign key problems: {len(problems)}"


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=20, help="how many SIGKILLs (default %(default)s)")
    parser.add_argument("--seed", type=int, help="seed the random choices (default: a fresh one, printed)")
    parser.add_argument("--senders", type=int, default=3, help="concurrent submitting clients (default %(default)s)")
    parser.add_argument("--shortest", type=float, default=0.05, help="shortest load before a kill, seconds")
    parser.add_argument("--longest", type=float, default=2.5, help="longest load before a kill, seconds")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: a free one)")
    parser.add_argument("--work", type=Path, help="data folder (default: a new temporary one, removed if all is well)")
    parser.add_argument("--keep", action="store_true", help="keep the data folder even if all is well")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if not 0 < args.shortest <= args.longest:
        parser.error("give 0 < --shortest <= --longest")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**32)
    rng = random.Random(seed)  # noqa: S311 - it picks kill moments and packet kinds, not secrets
    work = args.work or Path(tempfile.mkdtemp(prefix="exchange-crashtest-"))
    work.mkdir(parents=True, exist_ok=True)
    server = Server(work, args.port or free_port())
    run = Run()
    print(f"crash test in {work}, seed {seed}, {args.rounds} rounds", flush=True)
    started = time.monotonic()
    lost = 0
    figures: dict[str, Any] = {}
    try:
        for number in range(1, args.rounds + 1):
            before = len(run.writes)
            delay = await one_round(server, run, rng, args.senders, args.shortest, args.longest)
            print(f"  round {number}: killed after {delay:.2f} s, {len(run.writes) - before} writes acknowledged",
                  flush=True)
        checking = time.monotonic()
        server.start()
        await server.wait_ready()
        lost, figures = await check(server, run)
        figures["check_seconds"] = round(time.monotonic() - checking, 1)
        server.stop()
        figures["integrity"] = integrity(work / "var" / "exchange.sqlite")
        if figures["integrity"] != "ok":
            run.failures.append(f"SQLite integrity check: {figures['integrity']}")
    except Exception as error:  # noqa: BLE001 - reported as a failure, and the last line still printed
        run.failures.append(f"the crash test itself stopped: {error!r}")
    finally:
        server.stop()
    kinds = {kind: sum(1 for w in run.writes if w.kind == kind) for kind in ("submit", "approve", "acknowledge")}
    print(f"  acknowledged: {kinds}; in doubt at a kill: {len(run.in_doubt)} "
          f"(submissions among them that had committed: {figures.get('in_doubt_committed')})")
    print(f"  ledger: {figures.get('entries')} entries, {figures.get('log_entries_checked')} found in the record log, "
          f"{figures.get('log_orphaned_entries')} orphaned and {figures.get('log_torn_lines')} torn log lines "
          f"tolerated; {figures.get('packets')} packets; SQLite: {figures.get('integrity')}")
    if run.refused:
        print(f"  expected refusals: {run.refused}")
    print(f"  took {time.monotonic() - started:.1f} s, of which {figures.get('check_seconds')} s checking")
    for failure in run.failures[:30]:
        print(f"  FAILED: {failure}")
    ok = lost == 0 and not run.failures
    if ok and not args.keep and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    elif not ok:
        print(f"  data kept in {work}")
    print(f"crash: {args.rounds} rounds, {len(run.writes)} acknowledged writes, {lost} lost", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
