"""A throwaway HAProxy on loopback balancing HTTP over given backends, for tests and local runs.

``ThrowawayHAProxy([("127.0.0.1", 8081), ("127.0.0.1", 8082)])`` writes a config in a temporary
folder and runs Debian's ``haproxy`` in the foreground (``-db``) as a child process, listening on
127.0.0.1 at a free port: round robin, each backend checked with ``GET /health`` every 250 ms and
taken out after three failed checks (a check may take 2 s, as a loaded instance's may), and a request
whose connection a dead backend refuses is
retried on another one (``retries`` with ``option redispatch``). Runs the same as root or not.

    with ThrowawayHAProxy(backends) as balancer:
        balancer.url                  # http://127.0.0.1:PORT
        balancer.server_states()      # {"s0": "UP", "s1": "DOWN"}, from its stats socket

``python scripts/throwaway_haproxy.py 127.0.0.1:8081 127.0.0.1:8082`` runs one until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import csv
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from loopback import free_loopback_port

INSTALL_HINT = "apt-get install haproxy"
BACKEND = "exchange"


class HAProxyError(RuntimeError):
    """The throwaway HAProxy could not be started, asked or stopped."""


class HAProxyNotInstalled(HAProxyError):
    """No ``haproxy`` on this machine; the message says what to install."""


def find_haproxy() -> Path:
    """``haproxy`` on PATH or in /usr/sbin (not on a non-root user's PATH on Debian).

    Raises HAProxyNotInstalled, naming the package to install, when there is none.
    """
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise HAProxyNotInstalled(f"haproxy is not on PATH nor in /usr/sbin: install it with `{INSTALL_HINT}`")
    return Path(found)



def render_config(port: int, backends: Sequence[tuple[str, int]], stats_socket: Path) -> str:
    """The whole haproxy.cfg: one HTTP frontend on 127.0.0.1:``port``, one backend of ``backends``."""
    servers = "\n".join(
        f"    server s{index} {host}:{backend_port} check" for index, (host, backend_port) in enumerate(backends)
    )
    return f"""\
# Written by scripts/throwaway_haproxy.py for one test run.
global
    stats socket {stats_socket} mode 600 level admin
    # No master process, no daemon, no pid file: we are its parent and we stop it.

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A refused connection (a backend just killed) is tried again, on another server each time.
    retries 3
    option redispatch 1

frontend web
    bind 127.0.0.1:{port}
    default_backend {BACKEND}

backend {BACKEND}
    balance roundrobin
    option httpchk GET /health
    # Checked every 250 ms, out after three failures, back after two successes. A check may take 2 s: a
    # loaded instance answers /health late, and one slow answer must not take every instance out at once
    # (a dead one refuses the connection, so it fails its checks at once; its requests are redispatched).
    timeout check 2s
    default-server inter 250ms fastinter 250ms downinter 250ms fall 3 rise 2
{servers}
"""


class ThrowawayHAProxy:
    """One HAProxy child process balancing HTTP over ``backends`` (``(host, port)`` pairs).

    Started by the constructor (ready when its port accepts connections) and gone after
    ``stop()``, which is idempotent and also registered with atexit.
    """

    def __init__(
        self,
        backends: Sequence[tuple[str, int]],
        *,
        haproxy: Path | None = None,
        start_attempts: int = 3,
        timeout: float = 10.0,
    ) -> None:
        if not backends:
            raise ValueError("a balancer needs at least one backend")
        self.haproxy = haproxy or find_haproxy()
        self.backends = list(backends)
        self.root = Path(tempfile.mkdtemp(prefix="exchange-haproxy-"))
        self.config_path = self.root / "haproxy.cfg"
        self.log_path = self.root / "haproxy.log"
        self.stats_socket = self.root / "admin.sock"
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        atexit.register(self.stop)
        try:
            started = time.monotonic()
            self._start(start_attempts, timeout)
            self.startup_seconds = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def server_states(self) -> dict[str, str]:
        """Each backend server's state as HAProxy sees it now: ``UP``, ``DOWN``, ``UP 1/2``, ..."""
        rows = csv.DictReader(self._ask("show stat").lstrip("# ").splitlines())
        # The BACKEND and FRONTEND rows are the proxy's own totals, not servers.
        servers = (row for row in rows if row["pxname"] == BACKEND and row["svname"] not in {"BACKEND", "FRONTEND"})
        return {row["svname"]: row["status"] for row in servers}

    def wait_for_states(self, expected: dict[str, str], timeout: float = 5.0) -> None:
        """Return once ``server_states()`` shows ``expected`` (a subset); HAProxyError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            states = self.server_states()
            if all(states.get(name) == state for name, state in expected.items()):
                return
            if time.monotonic() > deadline:
                raise HAProxyError(f"backend states {states}, not {expected}, after {timeout} s")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop HAProxy (SIGTERM, its immediate stop; SIGKILL if it lingers) and remove the folder."""
        atexit.unregister(self.stop)
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayHAProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _start(self, attempts: int, timeout: float) -> None:
        # The port is free when chosen but may be taken before HAProxy binds it: then it exits at
        # once and we try again on a new one.
        for attempt in range(1, attempts + 1):
            self.port = free_loopback_port()
            self.config_path.write_text(render_config(self.port, self.backends, self.stats_socket), encoding="utf-8")
            with self.log_path.open("wb") as log:
                self._process = subprocess.Popen(
                    [str(self.haproxy), "-db", "-f", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self.root,
                )
            if self._wait_until_listening(self._process, timeout):
                return
            self._process.wait()
            self._process = None
            log_text = self.log_path.read_text(errors="replace")
            if attempt == attempts or "cannot bind" not in log_text.lower():
                raise HAProxyError(f"haproxy did not start on 127.0.0.1:{self.port}:\n{log_text}")

    def _wait_until_listening(self, process: subprocess.Popen[bytes], timeout: float) -> bool:
        """True once HAProxy accepts connections on our port and answers on its stats socket."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                self._ask("show info")
                return True
            time.sleep(0.01)
        process.kill()
        return False

    def _ask(self, command: str) -> str:
        """Send one command to HAProxy's stats socket and return its whole answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as admin:
            admin.settimeout(2.0)
            admin.connect(str(self.stats_socket))
            admin.sendall(command.encode() + b"\n")
            answer = bytearray()
            while chunk := admin.recv(65536):
                answer += chunk
        return answer.decode(errors="replace")


def _backend(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("backends", nargs="+", type=_backend, metavar="HOST:PORT")
    args = parser.parse_args()
    with ThrowawayHAProxy(args.backends) as balancer:
        print(f"{balancer.url}  (started in {balancer.startup_seconds:.2f} s; Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
