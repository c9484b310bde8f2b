"""A throwaway PostgreSQL cluster on loopback, for tests and local runs: started, used, removed.

``ThrowawayPostgres()`` runs Debian's own ``initdb`` and ``pg_ctl`` on a fresh temporary folder
and starts the server on 127.0.0.1 at a free port, its unix socket and its log in that folder.
It never touches a system cluster (Debian's on 5432, if one runs): nothing is shared but the binaries.

initdb and postgres refuse to run as root; as root, the cluster runs as the unprivileged system user
``exchange-pg`` (created if missing), which owns the temporary folder.

    with ThrowawayPostgres(fast=True) as cluster:
        dsn = cluster.create_database("case_1")   # postgresql://postgres@127.0.0.1:PORT/case_1

``python scripts/throwaway_pg.py`` starts one, prints its DSN and keeps it until Ctrl-C.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from loopback import free_loopback_port

INSTALL_HINT = "apt-get install postgresql"
SYSTEM_USER = "exchange-pg"
SUPERUSER = "postgres"
_TOOLS = ("initdb", "pg_ctl", "postgres", "psql")
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
# A database name we create: a plain identifier, so it needs no quoting in SQL nor in a DSN.
_DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# Off only for throwaway data: a crash loses the run, never anything kept (PostgreSQL's docs,
# "Non-Durable Settings", section 14.5).
_FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


class PostgresError(RuntimeError):
    """The throwaway cluster could not be set up, started, used or stopped."""


class PostgresNotInstalled(PostgresError):
    """PostgreSQL's server binaries are not on this machine; the message says what to install."""


@dataclass(frozen=True)
class PostgresBinaries:
    """The server programs of one PostgreSQL installation."""

    initdb: Path
    pg_ctl: Path
    postgres: Path
    psql: Path

    @classmethod
    def find(cls) -> PostgresBinaries:
        """The programs on PATH, else those of the highest version under /usr/lib/postgresql/N/bin.

        All four come from one place, so a PATH holding only a client (psql) never mixes versions.
        Raises PostgresNotInstalled, naming the package to install, when no place has them all.
        """
        on_path = [shutil.which(tool) for tool in _TOOLS]
        if all(on_path):
            return cls(*(Path(found) for found in on_path if found))
        for bin_dir in _debian_bin_dirs():
            if all((bin_dir / tool).is_file() for tool in _TOOLS):
                return cls(*(bin_dir / tool for tool in _TOOLS))
        raise PostgresNotInstalled(
            f"PostgreSQL's server programs ({', '.join(_TOOLS)}) are not on PATH nor under"
            f" {_DEBIAN_ROOT}/<version>/bin: install them with `{INSTALL_HINT}`"
        )


def _debian_bin_dirs() -> list[Path]:
    """Debian's versioned installations, the highest version first."""
    if not _DEBIAN_ROOT.is_dir():
        return []
    versions = [entry for entry in _DEBIAN_ROOT.iterdir() if entry.name.isdigit()]
    return [entry / "bin" for entry in sorted(versions, key=lambda entry: int(entry.name), reverse=True)]


@dataclass(frozen=True)
class _RunAs:
    """The account the cluster's programs run under: ourselves, or an unprivileged one when we are root."""

    uid: int
    gid: int

    @property
    def is_other(self) -> bool:
        return self.uid != os.geteuid()


def _unprivileged_account(name: str) -> _RunAs:
    """Ourselves when not root; as root, the system user ``name``, created if missing (no home, no login)."""
    if os.geteuid() != 0:
        return _RunAs(os.geteuid(), os.getegid())
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        created = subprocess.run(
            [useradd, "--system", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            entry = pwd.getpwnam(name)  # another run may have created it at the same moment: fine
        except KeyError:
            raise PostgresError(f"could not create the system user {name!r}: {created.stderr.strip()}") from None
    return _RunAs(entry.pw_uid, entry.pw_gid)



class ThrowawayPostgres:
    """One PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 at a free port.

    Started by the constructor (a few seconds at most) and gone after ``stop()``: the server shut
    down (fast mode) and the folder removed. ``stop`` is also registered with atexit, so a test run
    that ends by an exception leaves nothing running. (Should the folder vanish first, postgres
    notices its lock file gone within a minute and shuts itself down.)

    ``fast=False`` (the default) keeps PostgreSQL's durability defaults (fsync on); ``fast=True``
    turns off fsync, synchronous_commit and full_page_writes: for tests, whose data is thrown away.
    """

    def __init__(
        self,
        *,
        fast: bool = False,
        binaries: PostgresBinaries | None = None,
        settings: Mapping[str, str] | None = None,
        system_user: str = SYSTEM_USER,
        start_attempts: int = 3,
    ) -> None:
        self.binaries = binaries or PostgresBinaries.find()
        self.fast = fast
        self._settings = {**(_FAST_SETTINGS if fast else {}), **(settings or {})}
        self._account = _unprivileged_account(system_user)
        self.root = Path(tempfile.mkdtemp(prefix="exchange-pg-"))
        self.data_dir = self.root / "data"
        self.log_path = self.root / "postgres.log"
        self.port = 0
        self._running = False
        atexit.register(self.stop)
        try:
            started = time.monotonic()
            if self._account.is_other:
                os.chown(self.root, self._account.uid, self._account.gid)
            self._initdb()
            self._start(start_attempts)
            self.startup_seconds = time.monotonic() - started
        except BaseException:
            self.stop()
            raise

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def dsn(self) -> str:
        """The superuser's DSN for the ``postgres`` database (trust authentication: no password)."""
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def postmaster_pid(self) -> int | None:
        """The server's process id, read from its lock file; None when it is not running."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` (a plain lowercase identifier) and return its DSN.

        Copies template0, so it holds nothing a test left in template1. Raises ValueError for a
        name needing quotes, PostgresError if the server refuses (one by that name exists).
        """
        self._check_name(name)
        # PostgreSQL 15's default strategy (WAL_LOG) measured faster here than FILE_COPY, whose two
        # checkpoints cost more than logging a near-empty template: about 0.1-0.2 s a database.
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name`` (if it exists), disconnecting whoever is still connected to it."""
        self._check_name(name)
        self.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def execute(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql as the superuser and return what it prints (unaligned, no headers)."""
        if not self._running:
            raise PostgresError("the throwaway cluster is not running")
        done = subprocess.run(
            [
                str(self.binaries.psql),
                "--no-psqlrc",
                "--quiet",
                "--tuples-only",
                "--no-align",
                "--set=ON_ERROR_STOP=1",
                f"--command={sql}",
                self.dsn_for(database),
            ],
            capture_output=True,
            text=True,
            check=False,
            env=self._environment(),
        )
        if done.returncode != 0:
            raise PostgresError(f"psql failed ({sql}): {done.stderr.strip()}")
        return done.stdout

    def stop(self) -> None:
        """Shut the server down (fast mode: sessions ended, no checkpoint wait) and remove the folder.

        Idempotent. A server that will not stop within seconds is killed.
        """
        atexit.unregister(self.stop)
        if self._running:
            self._running = False
            pid = self.postmaster_pid
            stopped = self._run_as_owner(
                [str(self.binaries.pg_ctl), "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "10"],
                check=False,
            )
            # pg_ctl returns once the lock file is gone, a moment before the postmaster has exited.
            if pid is not None and not _gone(pid, timeout=10 if stopped.returncode == 0 else 0):
                _kill_and_wait(pid)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> ThrowawayPostgres:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _initdb(self) -> None:
        # --no-sync: a throwaway cluster does not outlive the machine, so initdb's final flush of
        # every file to disk is time spent for nothing (whatever `fast` says about the server).
        self._run_as_owner(
            [
                str(self.binaries.initdb),
                "--pgdata",
                str(self.data_dir),
                f"--username={SUPERUSER}",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        lines = [
            "# Added by scripts/throwaway_pg.py: loopback only, socket and nothing else in our folder.",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.root}'",
            *(f"{key} = '{value}'" for key, value in self._settings.items()),
        ]
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n" + "\n".join(lines) + "\n")

    def _start(self, attempts: int) -> None:
        # The port is free when chosen but another process may take it before postgres binds it:
        # then the start fails and we try again on a new one.
        for attempt in range(1, attempts + 1):
            self.port = free_loopback_port()
            started = self._run_as_owner(
                [
                    str(self.binaries.pg_ctl),
                    "start",
                    "-D",
                    str(self.data_dir),
                    "-l",
                    str(self.log_path),
                    "-o",
                    f"-p {self.port}",
                    "-w",
                    "-t",
                    "30",
                ],
                check=False,
            )
            if started.returncode == 0:
                self._running = True
                return
            if attempt == attempts or "could not bind" not in self._log_tail():
                raise PostgresError(
                    f"pg_ctl start failed: {started.stdout.strip()} {started.stderr.strip()}\n"
                    f"--- {self.log_path}:\n{self._log_tail()}"
                )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _run_as_owner(self, command: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run one of the cluster's programs as the account that owns it, in its folder."""
        account = self._account
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,  # our own cwd may be a folder the unprivileged user cannot enter
            env=self._environment(),
            # Like `setpriv --reuid --regid --clear-groups`: no PAM session, no shell, just the ids.
            user=account.uid if account.is_other else None,
            group=account.gid if account.is_other else None,
            extra_groups=[] if account.is_other else None,
        )
        if check and done.returncode != 0:
            raise PostgresError(f"{Path(command[0]).name} failed: {done.stdout.strip()} {done.stderr.strip()}")
        return done

    def _environment(self) -> dict[str, str]:
        # Nothing of the caller's PG* variables (a PGHOST, a PGDATABASE) may steer our programs.
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        env["LC_ALL"] = "C"
        return env

    @staticmethod
    def _check_name(name: str) -> None:
        if not _DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name {name!r} is not a plain lowercase identifier ([a-z_][a-z0-9_]*, < 64)")


def _gone(pid: int, timeout: float) -> bool:
    """Whether process ``pid`` has exited (a zombie counts: nothing of it runs), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def _kill_and_wait(pid: int, timeout: float = 5.0) -> None:
    """SIGQUIT (PostgreSQL's immediate shutdown), then SIGKILL if it is still there after ``timeout``."""
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        if _gone(pid, timeout):
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--fast", action="store_true", help="fsync, synchronous_commit, full_page_writes off")
    args = parser.parse_args()
    with ThrowawayPostgres(fast=args.fast) as cluster:
        print(f"{cluster.dsn}  (started in {cluster.startup_seconds:.2f} s; Ctrl-C stops it)", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()


if __name__ == "__main__":
    main()
