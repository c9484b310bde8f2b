"""The exchange's speed in one run: a real server, a bare floor beside it, the ledger, memory and a profile.

What it does (``scripts/bench``; ``--quick`` for a smaller run that says so):

1. Seeds a temporary data folder offline with the demo directory plus ``--senders`` extra
   safeguarding leads at the demo school and ``--recipients`` extra social workers at the demo
   children's services, so no one member's rate limit or rows dominate, then starts a real
   ``exchange serve`` (SQLite ``synchronous=FULL``, as by default) with its rate limit raised.
2. Seals every packet beforehand with the SDK (``ExchangeClient.prepare``; the recipients resolved
   once and reused) and signs each recipient's acknowledgement, into a file the load generator reads.
3. Drives the server from ``scripts/loadgen.py``, a separate process (``--loadgens`` of them):
   submissions at concurrency 1, 16 and 64, each followed by the same packets at the same
   concurrency against the floor (``scripts/bench_floor.py``: the same body, the same two Ed25519
   verifies and one durable SQLite insert, and nothing else), so each ratio is measured side by side;
   then the whole loop (submit, fetch, acknowledge) at 1, 16 and 64.
4. Profiles the server with ``py-spy record`` during one more submission phase at concurrency 64.
5. Submits until the server has taken ``--rss-packets`` packets and reads its resident memory
   (``VmRSS`` in ``/proc/PID/status``).
6. Stops the server and times offline ledger verification over ``--ledger-entries`` entries against a
   bare 2-SHA-256-per-leaf loop (``scripts/bench_ledger.py``), and inclusion proofs in a tree of that
   many leaves as the server makes them: the store's ``ledger_nodes`` read from SQLite plus
   ``exchange.ledger.tree.compute_inclusion_proof`` (the tree's nodes are written straight into the
   store's table, the server's own layout, rather than appended one by one).

It writes ``bench.json`` and ``bench.md`` (both git-ignored) and prints the table. A refused
request during the load means the figures are not the server's: the run then exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import linecache
import os
import platform
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
sys.path.insert(0, str(SCRIPTS))

import bench_ledger  # noqa: E402 - a sibling script, importable once scripts/ is on the path

from exchange import bootstrap, crypto, statements  # noqa: E402
from exchange.client import ExchangeClient, Resolution  # noqa: E402
from exchange.config import Config  # noqa: E402
from exchange.domain import Role  # noqa: E402
from exchange.examples import referral  # noqa: E402
from exchange.keyfile import MemberCredentials  # noqa: E402
from exchange.ledger import merkle, tree  # noqa: E402
from exchange.service import directory  # noqa: E402
from exchange.store import open_store  # noqa: E402

LEVELS = (1, 16, 64)

#: The issue's targets (issue 9), shown next to the figures.
TARGETS = {
    "submit_per_s": (">=", 1000.0),
    "submit_p99_ms": ("<=", 100.0),
    "ratio_to_floor": (">=", 0.8),
    "loop_per_s": (">=", 300.0),
    "ledger_verify_per_s": (">=", 500_000.0),
    "inclusion_proof_ms": ("<=", 1.0),
}


@dataclass(frozen=True)
class Sizes:
    """How much of everything one run does."""

    submit: dict[int, int]
    loop: dict[int, int]
    warm: int
    profile: int
    rss_packets: int
    ledger_entries: int
    inclusion_samples: int
    ledger_repeat: int
    max_seconds: float
    topup_seconds: float


FULL = Sizes(
    submit={1: 400, 16: 2000, 64: 4000},
    loop={1: 200, 16: 800, 64: 1500},
    warm=64,
    profile=2000,
    rss_packets=20_000,
    ledger_entries=1_000_000,
    inclusion_samples=2000,
    ledger_repeat=2,
    max_seconds=60.0,
    topup_seconds=1800.0,
)
QUICK = Sizes(
    submit={1: 40, 16: 160, 64: 320},
    loop={1: 15, 16: 60, 64: 120},
    warm=32,
    profile=300,
    rss_packets=2000,
    ledger_entries=100_000,
    inclusion_samples=300,
    ledger_repeat=1,
    max_seconds=3.0,
    topup_seconds=8.0,
)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- processes


def free_port(low: int, high: int, taken: Sequence[int] = ()) -> int:
    """The first port in ``[low, high]`` nobody listens on (the bench's own range), else any free one."""
    for port in range(low, high + 1):
        if port in taken:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def wait_healthy(url: str, process: subprocess.Popen[bytes], log: Path, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{url}: the process exited during start-up:\n{log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url + "/health", timeout=1) as answer:  # noqa: S310
            if answer.status == 200:  # (a loopback URL built here)
                return
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer /health in time")


def start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=os.environ | {"PYTHONUNBUFFERED": "1"}, cwd=ROOT
        )


def stop(process: subprocess.Popen[bytes] | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cpu_seconds(pid: int) -> tuple[float, float, float]:
    """CPU time the process has used so far: user, system, and its main thread's (user + system), in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    main = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / tick, int(fields[12]) / tick, (int(main[11]) + int(main[12])) / tick


def total_cpu_seconds(pids: Sequence[int]) -> tuple[float, float, float]:
    """:func:`cpu_seconds` summed over several processes (the instances of one service)."""
    totals = [cpu_seconds(pid) for pid in pids]
    return sum(t[0] for t in totals), sum(t[1] for t in totals), sum(t[2] for t in totals)


def family_cpu_seconds(root: int | None) -> float:
    """User + system CPU of a process and its children so far (PostgreSQL's postmaster and its backends).

    A child that has exited is counted in the parent's own total of its waited-for children (``cutime``
    and ``cstime``), so the sum never goes down when a backend ends between two readings.
    """
    if root is None:
        return 0.0
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == root:
                total += sum(int(f) for f in fields[11:15]) / tick
            elif int(fields[1]) == root:
                total += (int(fields[11]) + int(fields[12])) / tick
    return total


def memory_mb(pid: int) -> dict[str, float]:
    """Resident memory now and at its peak (``VmRSS``, ``VmHWM``), in MB (MiB)."""
    figures = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            figures[name] = round(int(value.split()[0]) / 1024, 1)
    return figures


class Region:
    """The PostgreSQL cluster and the balancer a ``--database postgres`` run starts (nothing on SQLite)."""

    def __init__(self) -> None:
        self.postgres: Any = None
        self.balancer: Any = None

    def database(self) -> str:
        """A fresh database on a throwaway, durable PostgreSQL cluster (fsync on, as in production)."""
        from throwaway_pg import ThrowawayPostgres

        say("== starting a throwaway PostgreSQL cluster (durable: fsync on)")
        self.postgres = ThrowawayPostgres()
        dsn: str = self.postgres.create_database("bench")
        return dsn

    def database_pid(self) -> int | None:
        return int(self.postgres.postmaster_pid) if self.postgres is not None and self.postgres.postmaster_pid else None

    def balance(self, ports: Sequence[int]) -> str:
        """HAProxy in front of the instances; its URL is the service's."""
        from throwaway_haproxy import ThrowawayHAProxy

        self.balancer = ThrowawayHAProxy([("127.0.0.1", port) for port in ports])
        say(f"== HAProxy at {self.balancer.url} over {len(ports)} instances")
        url: str = self.balancer.url
        return url

    def stop(self) -> None:
        for part in (self.balancer, self.postgres):
            if part is not None:
                part.stop()
        self.balancer = self.postgres = None


# ---------------------------------------------------------------------------- the members and their packets


@dataclass
class Cast:
    """The members the load is spread over, with their credentials."""

    senders: list[MemberCredentials] = field(default_factory=list)
    recipients: list[MemberCredentials] = field(default_factory=list)

    def keys_json(self) -> dict[str, dict[str, str]]:
        return {
            c.signing.key_id: {"private": c.signing.private_bytes().hex(), "public": c.signing.public_bytes.hex()}
            for c in (*self.senders, *self.recipients)
        }


async def seed(config: Config, key_dir: Path, url: str, senders: int, recipients: int) -> Cast:
    """The demo directory, then the extra senders and recipients, registered offline as the operator."""
    await bootstrap.seed_demo(config, key_dir=key_dir, server=url)
    school = MemberCredentials.load(key_dir / "school-dsl.json").agency_id
    csc = MemberCredentials.load(key_dir / "csc-duty.json").agency_id
    cast = Cast()
    async with bootstrap.offline_context(config) as ctx:
        homes = {"school": await ctx.store.get_agency(school or ""), "csc": await ctx.store.get_agency(csc or "")}
        lead: tuple[Role, ...] = (Role.SAFEGUARDING_LEAD, Role.PRACTITIONER)
        plan = [("school", f"Bench sender {n}", lead, cast.senders) for n in range(senders)]
        plan += [("csc", f"Bench social worker {n}", (Role.PRACTITIONER,), cast.recipients) for n in range(recipients)]
        for home, name, roles, into in plan:
            agency = homes[home]
            assert agency is not None
            keys = MemberCredentials.generate()
            registered = await directory.bootstrap_member(
                ctx, agency, name, list(roles), keys.signing.public_bytes, keys.encryption.public_bytes
            )
            into.append(keys.registered(registered.member.id, agency.id, url, name))
    return cast


async def seal(url: str, cast: Cast, linkage: bytes, count: int, items: Path) -> float:
    """Seal ``count`` referrals with the SDK, spread over the senders and recipients; seconds taken.

    Each line of ``items`` is one packet: its sender's and recipient's signing key ids, its id, the
    submission's JSON body as the SDK sends it, and the recipient's signed acknowledgement.
    """
    started = time.perf_counter()
    resolved: dict[tuple[str, ...], Resolution] = {}
    clients = [ExchangeClient(url, member, linkage_key=linkage) for member in cast.senders]
    async with contextlib.AsyncExitStack() as stack:
        for client in clients:
            await stack.enter_async_context(client)
        first = clients[0]
        real_resolve = first.resolve

        async def cached(to: Sequence[str]) -> Resolution:
            # Who a member id names does not depend on who asks: resolve (and check the key's
            # history in the ledger) once per recipient, not once per packet.
            if tuple(to) not in resolved:
                resolved[tuple(to)] = await real_resolve(to)
            return resolved[tuple(to)]

        for client in clients:
            client.resolve = cached  # type: ignore[method-assign]
        with items.open("w") as out:
            for number in range(count):
                client = clients[number % len(clients)]
                recipient = cast.recipients[(number // len(clients)) % len(cast.recipients)]
                sealed = await client.prepare(referral([recipient.member_id or ""]))
                # As ExchangeClient.submit builds it.
                document = {
                    "manifest": sealed.manifest,
                    "signature": crypto.b64encode(sealed.signature),
                    "body": crypto.b64encode(sealed.body),
                    "sealed_keys": {m: crypto.b64encode(k) for m, k in sealed.sealed_keys.items()},
                }
                packet_id = sealed.manifest["packet_id"]
                statement = statements.acknowledgement_statement(
                    packet_id, sealed.manifest_digest, recipient.member_id or ""
                )
                signed = crypto.b64encode(recipient.signing.sign(statement))
                ack = {"key_id": recipient.signing.key_id, "signature": signed}
                out.write(json.dumps({
                    "sender": client.credentials.signing.key_id,
                    "recipient": recipient.signing.key_id,
                    "packet_id": packet_id,
                    "body": json.dumps(document, separators=(",", ":")),
                    "ack": json.dumps(ack, separators=(",", ":")),
                }) + "\n")
    return time.perf_counter() - started


# ---------------------------------------------------------------------------- load phases


def percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass
class Bench:
    work: Path
    items: Path
    keys: Path
    loadgens: int
    max_seconds: float
    server_url: str = ""
    #: The database server's main process (PostgreSQL's postmaster), whose family's CPU is counted too.
    database_pid: int | None = None
    cursor: int = 0
    total_items: int = 0
    submitted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    examples: list[str] = field(default_factory=list)

    def run(
        self, name: str, url: str, pids: Sequence[int], mode: str, start: int, count: int, concurrency: int,
        *, max_seconds: float | None = None, self_check: bool = False,
    ) -> dict[str, Any]:
        """One phase: ``count`` items from ``start`` at ``concurrency``, over ``--loadgens`` processes."""
        count = min(count, self.total_items - start)
        procs = max(1, min(self.loadgens, concurrency))
        shares = [concurrency // procs + (1 if k < concurrency % procs else 0) for k in range(procs)]
        counts = [count * share // concurrency for share in shares]
        counts[-1] += count - sum(counts)
        running = []
        offset = start
        for k, (share, part) in enumerate(zip(shares, counts, strict=True)):
            out = self.work / f"{name}-{k}.json"
            command = [
                sys.executable, str(SCRIPTS / "loadgen.py"), "--url", url, "--mode", mode,
                "--items", str(self.items), "--keys", str(self.keys), "--start", str(offset), "--count", str(part),
                "--concurrency", str(share), "--max-seconds", str(max_seconds or self.max_seconds), "--out", str(out),
            ]
            if self_check and k == 0:
                command.append("--self-check")
            offset += part
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT,
                                       env=os.environ | {"PYTHONPATH": str(ROOT)})
            running.append((process, out))
        for process, _ in running:
            assert process.stdout is not None
            if process.stdout.readline().strip() != b"ready":
                process.wait()
                raise SystemExit(f"{name}: the load generator did not start (exit {process.returncode})")
        server_cpu = total_cpu_seconds(pids)
        database_cpu = family_cpu_seconds(self.database_pid) if url == self.server_url else 0.0
        for process, _ in running:
            assert process.stdin is not None
            process.stdin.write(b"go\n")
            process.stdin.flush()
        results = []
        for process, out in running:
            if process.wait() != 0:
                raise SystemExit(f"{name}: the load generator failed (exit {process.returncode})")
            results.append(json.loads(out.read_text()))
        user, system, main = (after - before for after, before in zip(total_cpu_seconds(pids), server_cpu, strict=True))
        database_cpu = (family_cpu_seconds(self.database_pid) - database_cpu) if url == self.server_url else 0.0
        latencies = [ms for r in results for ms in r["latencies_ms"]]
        elapsed = max(r["ended"] for r in results) - min(r["started"] for r in results)
        begun = sum(r["begun"] for r in results)
        done = sum(r["done"] for r in results)
        for r in results:
            for key, number in r["refused"].items():
                self.refused[key] = self.refused.get(key, 0) + number
            self.examples.extend(r["examples"][: max(0, 10 - len(self.examples))])
        if url == self.server_url:
            self.submitted += begun
        figures = {
            "concurrency": concurrency,
            "done": done,
            "per_s": round(done / elapsed, 1) if elapsed > 0 else 0.0,
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies, default=float("nan")), 1),
            "seconds": round(elapsed, 2),
            # Cores busy: the server (or floor) process, and the load generators.
            "server_cores": round((user + system) / elapsed, 2) if elapsed > 0 else 0.0,
            "server_system_share": round(system / (user + system), 2) if user + system > 0 else 0.0,
            # The event loop's thread alone: one core is all it can ever use.
            "server_main_thread_cores": round(main / elapsed, 2) if elapsed > 0 else 0.0,
            "loadgen_cores": round(sum(r["cpu_seconds"] for r in results) / elapsed, 2) if elapsed > 0 else 0.0,
            # PostgreSQL's processes, when the service runs on it (0 on SQLite: it lives in the server).
            "database_cores": round(database_cpu / elapsed, 2) if elapsed > 0 else 0.0,
            "capped": begun < count,
            # Where the next phase's packets start: after the last one begun. Several load generators
            # each cut short their own share, so then the whole slice counts as used.
            "_end": start + (begun if procs == 1 else count),
        }
        capped = " (stopped at the time cap)" if begun < count else ""
        say(f"  {name:<16} c={concurrency:<3} {done:>6} in {elapsed:6.2f} s: {figures['per_s']:>8.1f}/s  "
            f"p50 {figures['p50_ms']:>7.1f} ms  p99 {figures['p99_ms']:>7.1f} ms  cores: server "
            f"{figures['server_cores']:.2f} ({figures['server_system_share']:.0%} kernel, main thread "
            f"{figures['server_main_thread_cores']:.2f}), "
            + (f"postgres {figures['database_cores']:.2f}, " if self.database_pid and url == self.server_url else "")
            + f"load {figures['loadgen_cores']:.2f}{capped}")
        return figures

    def fresh(self, count: int) -> int:
        """Reserve the next ``count`` unused packets; their first index."""
        start = self.cursor
        self.cursor = min(self.total_items, self.cursor + count)
        return start

    def used(self, figures: dict[str, Any]) -> None:
        """Give back what a phase cut short by its time cap did not begin."""
        self.cursor = figures.pop("_end")


@contextlib.contextmanager
def profiling(pid: int, output: Path, *, native: bool = False) -> Iterator[dict[str, Any]]:
    """``py-spy record`` the server while the body runs; the outcome (or why there is none) in the dict."""
    found: dict[str, Any] = {}
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        found["error"] = "py-spy is not installed (pip install py-spy)"
        yield found
        return
    log = output.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--rate", "100", "--idle", "--full-filenames",
             *(["--native"] if native else []), "--format", "raw", "--output", str(output)],
            stdout=out, stderr=subprocess.STDOUT,
        )
    time.sleep(1.0)  # let it attach
    try:
        yield found
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
        if not output.exists() or not output.read_text().strip():
            found["error"] = "py-spy could not profile the server: " + log.read_text(errors="replace")[-500:].strip()


def _short(path: str) -> str:
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if path.startswith(str(ROOT) + "/"):
        return path[len(str(ROOT)) + 1 :]
    if "/lib/python3" in path:
        return path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return path


def _thread(frames: Sequence[str]) -> str:
    joined = ";".join(frames)
    if "_connection_worker_thread" in joined:
        return "aiosqlite worker"
    if "run_app" in joined:
        return "event loop"
    return "other threads"


#: Where the server's threads wait rather than work: a sample whose innermost frame is at one of these
#: source lines is idle. (py-spy's own idle test counts aiosqlite's wait on its queue as running.)
_WAITS = ("tx.get()", "work_queue.get(block=True)", "self._selector.poll(", "waiter.acquire(", "self._cond.wait(")


def read_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """What the server's threads did, from py-spy's collapsed stacks (``frame;frame;... count``).

    Every thread's stack is recorded at each sampling instant (``--idle``); a stack whose
    innermost frame waits (:data:`_WAITS`) is idle. ``threads_running_pct``: the share of the
    instants each thread was not waiting (a thread waiting for the GIL still counts as running);
    ``top_self``: the innermost function of the running stacks, as a share of them all;
    ``top_inclusive_exchange``: the project's functions on the running event loop's stack, as a
    share of the instants (of the wall time: the loop is the one core the server's Python can use).
    """
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    running: dict[str, int] = {}
    seen: dict[str, int] = {}
    stacks = 0
    for line in raw.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        count = int(number)
        frames, paths = [], []
        for frame in stack.split(";"):
            name, _, where = frame.rstrip(")").partition(" (")
            paths.append(where)
            frames.append(f"{name} ({_short(where.rpartition(':')[0])})")
        path, _, lineno = paths[-1].rpartition(":")
        source = linecache.getline(path, int(lineno)) if lineno.isdigit() else ""
        thread = _thread(frames)
        running.setdefault(thread, 0)
        seen[thread] = seen.get(thread, 0) + count
        if any(wait in source for wait in _WAITS):
            continue
        running[thread] += count
        stacks += count
        innermost = frames[-1]
        if innermost.startswith(("_connection_worker_thread", "Connection._execute")):
            innermost = "aiosqlite worker in a C call (SQLite, or taking the GIL back)"
        own[innermost] = own.get(innermost, 0) + count
        if thread == "event loop":
            for frame in set(frames):
                if "(exchange/" in frame:
                    inclusive[frame] = inclusive.get(frame, 0) + count
    # The event loop's thread is recorded at every instant, running or not.
    instants = max(seen.get("event loop", 0), 1)
    # Frames on (nearly) every running sample of the loop (the server's main, run_app) say nothing.
    inclusive = {f: n for f, n in inclusive.items() if n < 0.98 * running.get("event loop", 0)}

    def share(table: dict[str, int], whole: int, rows: int) -> list[dict[str, Any]]:
        ranked = sorted(table.items(), key=lambda kv: -kv[1])
        return [{"function": f, "pct": round(100 * n / whole, 1)} for f, n in ranked[:rows]] if whole else []

    return {
        "tool": "py-spy record --idle, 100 Hz, every thread of the server",
        "samples": instants,
        "threads_running_pct": {t: round(100 * n / instants, 1) for t, n in sorted(running.items())},
        "top_self": share(own, stacks, top),
        "top_inclusive_exchange": share(inclusive, instants, top + 5),
    }


# ---------------------------------------------------------------------------- the ledger


async def inclusion_latency(leaves: list[bytes], samples: int, folder: Path) -> dict[str, Any]:
    """Inclusion proofs for random leaves of a tree of ``len(leaves)``, as the server makes them, in ms."""
    path = folder / "ledger.sqlite"
    store = await open_store(path)  # the store's own schema, migrated
    await store.close()
    started = time.perf_counter()
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN")
        # Level L holds the hash of every perfect subtree of 2**L leaves, as the store keeps them.
        level, height = leaves, 0
        while level:
            db.executemany(
                "INSERT INTO ledger_nodes (level, idx, hash) VALUES (?, ?, ?)",
                ((height, index, node) for index, node in enumerate(level)),
            )
            level = [merkle.node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
            height += 1
        db.execute("COMMIT")
    built = time.perf_counter() - started
    size = len(leaves)
    rng = random.Random(9)  # noqa: S311 - picks leaves, not secrets
    store = await open_store(path)
    try:
        root = tree.compute_root(size, await store.ledger_nodes(tree.needed_nodes_for_root(size)))
        frontier = tree.Frontier()
        for leaf in leaves:
            frontier.append(leaf)
        if root != frontier.root():
            raise SystemExit("the tree written into the store does not have the ledger's root")
        store_ms, compute_ms = [], []
        for _ in range(samples):
            seq = rng.randrange(size)
            began = time.perf_counter()
            keys = tree.needed_nodes_for_inclusion(seq, size)
            nodes = await store.ledger_nodes(keys)
            computing = time.perf_counter()
            proof = tree.compute_inclusion_proof(seq, size, nodes)
            ended = time.perf_counter()
            store_ms.append((ended - began) * 1000)
            compute_ms.append((ended - computing) * 1000)
            merkle.verify_inclusion(seq, size, leaves[seq], proof, root)
    finally:
        await store.close()
    return {
        "tree_size": size,
        "samples": samples,
        "what": "store.ledger_nodes (SQLite read) + tree.compute_inclusion_proof, each proof verified",
        "p50_ms": round(percentile(store_ms, 0.5), 3),
        "p99_ms": round(percentile(store_ms, 0.99), 3),
        "mean_ms": round(sum(store_ms) / len(store_ms), 3),
        "compute_only_mean_ms": round(sum(compute_ms) / len(compute_ms), 4),
        "tree_build_s": round(built, 1),
    }


def ledger_figures(entries_count: int, repeat: int, samples: int, folder: Path) -> dict[str, Any]:
    say(f"== ledger: building {entries_count:,} realistic entries")
    entries = bench_ledger.build_entries(entries_count)
    timed = bench_ledger.measure(entries, repeat=repeat, strict=True)
    leaves = [merkle.leaf_hash(e) for e in entries]
    del entries
    verify = {
        "entries": entries_count,
        "verify_per_s": round(entries_count / timed["verify_s"]),
        "strict_per_s": round(entries_count / timed["strict_s"]),
        "sha256_per_s": round(entries_count / timed["sha256_s"]),
        "read_b64_sha256_per_s": round(entries_count / timed["read_b64_sha256_s"]),
        "verify_times_sha256": round(timed["verify_s"] / timed["sha256_s"], 2),
        "export_mb": round(timed["export_mb"], 1),
        "heads": int(timed["heads"]),
    }
    say(f"  verify_export {verify['verify_per_s']:,}/s, {verify['verify_times_sha256']}x the bare hashing loop "
        f"({verify['sha256_per_s']:,}/s)")
    say(f"== inclusion proofs in a tree of {entries_count:,} leaves")
    inclusion = asyncio.run(inclusion_latency(leaves, samples, folder))
    say(f"  p50 {inclusion['p50_ms']} ms, p99 {inclusion['p99_ms']} ms (tree written in {inclusion['tree_build_s']} s)")
    return {"ledger": verify, "inclusion": inclusion}


# ---------------------------------------------------------------------------- the report


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "python": platform.python_version(), "kernel": platform.release()}


def met(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    sense, bound = TARGETS[key]
    ok = value >= bound if sense == ">=" else value <= bound
    return "met" if ok else "not met"


def store_of(result: dict[str, Any]) -> str:
    """The store and instances a run measured, in words."""
    if result.get("database") == "postgres":
        instances = int(result.get("instances", 1))
        return f"PostgreSQL, {instances} instance{'s behind HAProxy' if instances > 1 else ''}"
    return "SQLite (embedded), 1 instance"


def markdown(result: dict[str, Any]) -> str:
    rows = [
        ("durable submissions/s, concurrency 64", "submit_per_s", f"{result['submit_per_s']:,.0f}/s", "≥ 1,000/s"),
        ("submission p99, concurrency 64", "submit_p99_ms", f"{result['submit_p99_ms']:,.0f} ms", "≤ 100 ms"),
        ("floor (bare aiohttp + 2 Ed25519 + 1 durable insert), c64", "floor_per_s",
         f"{result['floor_per_s']:,.0f}/s (p99 {result['floor_p99_ms']:,.0f} ms)", ""),
        ("service / floor, concurrency 64", "ratio_to_floor", f"{result['ratio_to_floor']:.2f}", "≥ 0.8"),
        ("send → fetch → acknowledge loops/s, concurrency 64", "loop_per_s",
         f"{result['loop_per_s']:,.0f}/s (p99 {result['loop_p99_ms']:,.0f} ms)", "≥ 300/s"),
        (f"ledger verification, {result['detail']['ledger']['entries']:,} entries", "ledger_verify_per_s",
         f"{result['ledger_verify_per_s']:,.0f}/s ({result['detail']['ledger']['verify_times_sha256']}× a bare "
         "2-SHA-256 loop)", "≥ 500,000/s"),
        (f"inclusion proof, {result['detail']['inclusion']['tree_size']:,} entries (store + tree)",
         "inclusion_proof_ms",
         f"p50 {result['inclusion_proof_ms']} ms, p99 {result['detail']['inclusion']['p99_ms']} ms", "≤ 1 ms"),
        (f"server RSS after {result['rss_packets']:,} packets", "rss_mb_20k", f"{result['rss_mb_20k']:,.0f} MB", ""),
    ]
    quick = " — QUICK run: fewer packets, a smaller ledger" if result["quick"] else ""
    lines = [
        f"Measured {result['date']} on {result['machine']['nproc']} × {result['machine']['cpu']} "
        f"(Python {result['machine']['python']}){quick}; the store: {store_of(result)}.",
        "",
        "| figure | measured | target | |",
        "|---|---|---|---|",
    ]
    for label, key, shown, target in rows:
        lines.append(f"| {label} | {shown} | {target} | {met(key, float(result[key]))} |")
    lines += [
        "",
        "| concurrency | submit/s | p50 ms | p99 ms | floor/s | floor p99 ms | ratio | loop/s | loop p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for level in LEVELS:
        s, f, loop = (result["detail"][k][str(level)] for k in ("submit", "floor", "loop"))
        ratio = s["per_s"] / f["per_s"] if f["per_s"] else 0.0
        lines.append(f"| {level} | {s['per_s']:,.0f} | {s['p50_ms']:,.1f} | {s['p99_ms']:,.1f} | {f['per_s']:,.0f} | "
                     f"{f['p99_ms']:,.1f} | {ratio:.2f} | {loop['per_s']:,.0f} | {loop['p99_ms']:,.1f} |")
    profile = result["detail"].get("profile") or {}
    if profile.get("top_self"):
        lines += ["", f"Profile of the server under submissions at concurrency 64 ({profile['tool']}, "
                  f"{profile['samples']:,} samples; share of the time each thread was running: "
                  + ", ".join(f"{t} {p}%" for t, p in profile["threads_running_pct"].items())
                  + f"; the phase ran at {profile['phase']['per_s']:,.0f}/s under the profiler):", "",
                  "| % of stacks | innermost function | | % of wall time | exchange function on the loop's stack |",
                  "|---|---|---|---|---|"]
        for own, incl in itertools.zip_longest(profile["top_self"], profile["top_inclusive_exchange"]):
            left = f"{own['pct']} | `{own['function']}`" if own else " | "
            right = f"{incl['pct']} | `{incl['function']}`" if incl else " | "
            lines.append(f"| {left} | | {right} |")
    elif profile.get("error"):
        lines += ["", f"No profile: {profile['error']}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smaller run (under a minute), marked as such")
    parser.add_argument("--senders", type=int, default=64, help="extra sending members (default %(default)s)")
    parser.add_argument("--recipients", type=int, default=16, help="extra receiving members (default %(default)s)")
    parser.add_argument("--loadgens", type=int, default=1, help="load generator processes per phase (default 1)")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profile")
    parser.add_argument("--native", action="store_true", help="profile C frames too (py-spy --native): SQLite's own")
    parser.add_argument("--ports", default="18600-18699", help="where to look for free ports (default %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "bench.md")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (server log, profile)")
    parser.add_argument("--database", choices=["sqlite", "postgres"], default="sqlite",
                        help="the store: the embedded SQLite file, or a throwaway PostgreSQL cluster (durable)")
    parser.add_argument("--instances", type=int, default=1,
                        help="server instances (PostgreSQL only; more than one are behind a throwaway HAProxy)")
    args = parser.parse_args(argv)
    if args.instances < 1 or (args.instances > 1 and args.database != "postgres"):
        parser.error("--instances N > 1 needs --database postgres (instances share one store)")
    sizes = QUICK if args.quick else FULL
    low, high = (int(p) for p in args.ports.split("-"))
    began = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    servers: list[subprocess.Popen[bytes]] = []
    floor: subprocess.Popen[bytes] | None = None
    region = Region()
    detail: dict[str, Any] = {"submit": {}, "floor": {}, "loop": {}}
    say(f"bench{' (QUICK: fewer packets, a smaller ledger)' if args.quick else ''} in {work}")
    try:
        ports = [free_port(low, high)]
        for _ in range(args.instances):
            ports.append(free_port(low, high, taken=ports))
        floor_port, instance_ports = ports[0], ports[1:]
        url, floor_url = f"http://127.0.0.1:{instance_ports[0]}", f"http://127.0.0.1:{floor_port}"
        database = region.database() if args.database == "postgres" else None
        config = Config(data_dir=work / "var", keys_dir=work / "keys", database=database)
        key_dir = work / "keys" / "demo"
        cast = asyncio.run(seed(config, key_dir, url, args.senders, args.recipients))
        keys = work / "keys.json"
        keys.write_text(json.dumps(cast.keys_json()))
        for n, port in enumerate(instance_ports):
            servers.append(start([
                sys.executable, "-m", "exchange.cli.main", "serve", "--data-dir", str(config.data_dir / f"i{n}"),
                "--keys-dir", str(config.keys_dir), "--port", str(port),
                "--rate-limit-per-minute", "1000000000", "--max-concurrent-requests", "4096",
                # The store seeded above (each instance keeps its own record log in its data folder).
                "--database", str(config.database_target),
            ], work / f"server-{n}.log"))
        floor = start([sys.executable, str(SCRIPTS / "bench_floor.py"), "--port", str(floor_port),
                       "--database", str(work / "floor.sqlite"), "--keys", str(keys)], work / "floor.log")
        for n, (port, server) in enumerate(zip(instance_ports, servers, strict=True)):
            wait_healthy(f"http://127.0.0.1:{port}", server, work / f"server-{n}.log")
        wait_healthy(floor_url, floor, work / "floor.log")
        if len(servers) > 1:
            url = region.balance(instance_ports)
        server = servers[0]
        pids = [process.pid for process in servers]
        phases = sizes.warm + sum(sizes.submit.values()) + sum(sizes.loop.values()) + sizes.profile
        total = max(sizes.rss_packets, phases)
        items = work / "items.jsonl"
        linkage = bytes.fromhex((key_dir / "linkage.key").read_text().strip())
        say(f"== sealing {total:,} packets with the SDK ({args.senders} senders, {args.recipients} recipients)")
        seal_s = asyncio.run(seal(url, cast, linkage, total, items))
        say(f"  {seal_s:.1f} s ({total / seal_s:.0f}/s)")
        bench = Bench(work, items, keys, args.loadgens, sizes.max_seconds, total_items=total, server_url=url,
                      database_pid=region.database_pid())
        rss_start = memory_mb(server.pid)

        say("== warm-up, then submissions (service, then the floor with the same packets)")
        start_at = bench.fresh(sizes.warm)
        bench.used(bench.run("warm-up", url, pids, "submit", start_at, sizes.warm, 16, self_check=True))
        bench.run("floor warm-up", floor_url, [floor.pid], "submit", start_at, sizes.warm, 16)
        for level in LEVELS:
            start_at = bench.fresh(sizes.submit[level])
            count = sizes.submit[level]
            detail["submit"][str(level)] = bench.run("submit", url, pids, "submit", start_at, count, level)
            bench.used(detail["submit"][str(level)])
            floor_figures = bench.run("floor", floor_url, [floor.pid], "submit", start_at, count, level)
            floor_figures.pop("_end")
            detail["floor"][str(level)] = floor_figures
        say("== the whole loop: submit, fetch, acknowledge")
        for level in LEVELS:
            start_at = bench.fresh(sizes.loop[level])
            detail["loop"][str(level)] = bench.run("loop", url, pids, "loop", start_at, sizes.loop[level], level)
            bench.used(detail["loop"][str(level)])
        if args.no_profile:
            detail["profile"] = {"error": "skipped (--no-profile)"}
        else:
            say("== profiling the server (py-spy) under submissions at concurrency 64")
            raw = work / "profile.txt"
            with profiling(server.pid, raw, native=args.native) as outcome:
                start_at = bench.fresh(sizes.profile)
                figures = bench.run("profiled submit", url, pids, "submit", start_at, sizes.profile, 64)
                bench.used(figures)
            detail["profile"] = outcome if "error" in outcome else read_profile(raw) | {"phase": figures}
        topup = sizes.rss_packets - bench.submitted
        if topup > 0:
            say(f"== submitting {topup:,} more packets, to {sizes.rss_packets:,} in all")
            start_at = bench.fresh(topup)
            bench.used(bench.run("top-up", url, pids, "submit", start_at, topup, 64,
                                           max_seconds=sizes.topup_seconds))
        rss = memory_mb(server.pid)
        detail["rss"] = {"packets": bench.submitted, "start_mb": rss_start.get("VmRSS"), "end_mb": rss.get("VmRSS"),
                         "peak_mb": rss.get("VmHWM")}
        say(f"  server RSS {rss.get('VmRSS')} MB after {bench.submitted:,} packets "
            f"(at the start {rss_start.get('VmRSS')} MB)")
        for process in servers:
            stop(process)
        stop(floor)
        servers, floor = [], None
        region.stop()
        detail.update(ledger_figures(sizes.ledger_entries, sizes.ledger_repeat, sizes.inclusion_samples, work))
        detail["sealing"] = {"packets": total, "seconds": round(seal_s, 1)}
    finally:
        for process in servers:
            stop(process)
        stop(floor)
        region.stop()
    sixty_four = detail["submit"]["64"]
    floor64 = detail["floor"]["64"]
    result: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "database": args.database,
        "instances": args.instances,
        "machine": machine(),
        "submit_per_s": sixty_four["per_s"],
        "submit_p50_ms": sixty_four["p50_ms"],
        "submit_p99_ms": sixty_four["p99_ms"],
        "loop_per_s": detail["loop"]["64"]["per_s"],
        "loop_p99_ms": detail["loop"]["64"]["p99_ms"],
        "floor_per_s": floor64["per_s"],
        "floor_p99_ms": floor64["p99_ms"],
        "ratio_to_floor": round(sixty_four["per_s"] / floor64["per_s"], 3) if floor64["per_s"] else 0.0,
        "ledger_verify_per_s": detail["ledger"]["verify_per_s"],
        "inclusion_proof_ms": detail["inclusion"]["p50_ms"],
        "rss_mb_20k": detail["rss"]["end_mb"],
        "rss_packets": detail["rss"]["packets"],
        "refused": bench.refused,
        "seconds": round(time.monotonic() - began, 1),
        "detail": detail,
    }
    result["targets"] = {key: {"target": f"{sense} {bound:g}", "met": met(key, float(result[key])) == "met"}
                         for key, (sense, bound) in TARGETS.items()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.markdown.write_text(table)
    print(table)
    print(f"(written to {args.out} and {args.markdown}; {result['seconds']} s in all)")
    if bench.refused:
        say(f"REFUSED during the load: {bench.refused}")
        for example in bench.examples:
            say(f"  {example}")
        say(f"data kept in {work}")
        return 1
    if args.keep:
        say(f"data kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
