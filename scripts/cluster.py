"""A region on one machine: PostgreSQL, several stateless exchange instances and HAProxy, on loopback.

``scripts/cluster`` starts a throwaway PostgreSQL cluster (durable: fsync on), seeds the demo
directory into it, starts N ``exchange serve --database URL`` instances (default 2) sharing the
server key, and a real HAProxy balancing over them with health checks on ``/health``; it prints
how to talk to it and stops everything on Ctrl-C. :class:`Cluster` is the same thing as a
context manager, for the kill test (tests/test_cluster.py) and ``scripts/bench --database postgres``.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback import free_loopback_port
from throwaway_haproxy import ThrowawayHAProxy
from throwaway_pg import ThrowawayPostgres

ROOT = Path(__file__).resolve().parent.parent


def health(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The instance's ``/health`` answer, or None if it does not answer."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as answer:  # noqa: S310 - loopback http
            found: dict[str, Any] = json.loads(answer.read())
            return found
    except (OSError, urllib.error.URLError, ValueError):
        return None


class Instance:
    """One ``exchange serve`` process on a loopback port, its own data folder (record log) and log file."""

    def __init__(self, number: int, database: str, keys_dir: Path, work: Path, extra: Sequence[str]) -> None:
        self.number = number
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data_dir = work / f"instance-{number}"
        self.log_path = work / f"instance-{number}.log"
        self.command = [
            sys.executable, "-m", "exchange.cli.main", "serve", "--database", database,
            "--data-dir", str(self.data_dir), "--keys-dir", str(keys_dir), "--port", str(self.port), *extra,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )

    def wait_healthy(self, within: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"instance {self.number} exited: {self.log_path.read_text()[-2000:]}")
            found = health(self.url)
            if found is not None:
                return found
            time.sleep(0.1)
        raise RuntimeError(f"instance {self.number} did not answer /health within {within:.0f} s")

    def kill(self) -> None:
        """SIGKILL, as a crash would: no clean stop, no lease handed over."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


class Cluster:
    """PostgreSQL + ``instances`` exchange servers + HAProxy, all on loopback, gone after :meth:`stop`.

    ``serve_options`` are added to every instance's ``exchange serve`` command (e.g. a raised rate
    limit for a benchmark). The demo members' key files are in ``demo_keys``.
    """

    def __init__(
        self,
        instances: int = 2,
        *,
        work: Path | None = None,
        serve_options: Sequence[str] = (),
        postgres: ThrowawayPostgres | None = None,
    ) -> None:
        if instances < 1:
            raise ValueError("a cluster needs at least one instance")
        #: A folder made here (not given) is removed on stop: it holds the demo members' private keys.
        self._own_work = work is None
        self.work = work or Path(tempfile.mkdtemp(prefix="exchange-cluster-"))
        self.keys_dir = self.work / "keys"
        self.demo_keys = self.keys_dir / "demo"
        self._own_postgres = postgres is None
        self.postgres: ThrowawayPostgres | None = postgres
        self.balancer: ThrowawayHAProxy | None = None
        self.instances: list[Instance] = []
        try:
            if self.postgres is None:
                self.postgres = ThrowawayPostgres()
            # A cluster of its own holds one database; one shared with others (tests) gets a fresh one each time.
            name = "exchange" if self._own_postgres else f"exchange_{secrets.token_hex(4)}"
            self.database = self.postgres.create_database(name)
            self.instances = [
                Instance(n, self.database, self.keys_dir, self.work, serve_options) for n in range(1, instances + 1)
            ]
            # The first seeds the demo directory (and the server key every instance shares), then the rest.
            first, *rest = self.instances
            first.command.append("--seed-demo")
            first.start()
            first.wait_healthy()
            for instance in rest:
                instance.start()
            for instance in rest:
                instance.wait_healthy()
            self.balancer = ThrowawayHAProxy([("127.0.0.1", i.port) for i in self.instances])
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        assert self.balancer is not None
        return self.balancer.url

    def leaders(self) -> dict[str, list[int]]:
        """Which instances say they hold each lease (``heads``, ``deadlines``), from their ``/health``."""
        held: dict[str, list[int]] = {"heads": [], "deadlines": []}
        for instance in self.instances:
            found = health(instance.url)
            for lease, holding in ((found or {}).get("leader") or {}).items():
                if holding:
                    held.setdefault(lease, []).append(instance.number)
        return held

    def stop(self) -> None:
        if self.balancer is not None:
            self.balancer.stop()
            self.balancer = None
        for instance in self.instances:
            instance.stop()
        if self.postgres is not None and self._own_postgres:
            self.postgres.stop()
            self.postgres = None
        if self._own_work:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=2, help="exchange server instances (default %(default)s)")
    parser.add_argument("--work", type=Path, help="folder for keys, logs and record logs (default: a new temporary)")
    args = parser.parse_args(argv)
    print(f"Starting PostgreSQL, {args.instances} exchange instances and HAProxy on loopback...", flush=True)
    with Cluster(args.instances, work=args.work) as cluster:
        assert cluster.postgres is not None
        print(f"""
The exchange is at {cluster.url} (HAProxy, balancing over {len(cluster.instances)} instances).
  database     {cluster.database}
  instances    {", ".join(i.url for i in cluster.instances)} (logs: {cluster.work}/instance-N.log)
  demo keys    {cluster.demo_keys}
  leases       {cluster.leaders()}

Try:
  .venv/bin/exchange inbox --key {cluster.demo_keys}/csc-duty.json --server {cluster.url}
  curl -s {cluster.url}/health
Kill an instance (kill -9 <pid>: {", ".join(str(i.process.pid) for i in cluster.instances if i.process)}) and
the balancer takes it out; the other takes over its leases once they lapse. Ctrl-C stops everything.
""", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nStopping...", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
