"""The service's configuration: one frozen dataclass, built once at start-up and passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Config:
    """Everything the server needs to know; no module reads the environment on its own."""

    #: Folder holding the SQLite database, the record log and (by default) the keys.
    data_dir: Path
    #: Where the server's Ed25519 key lives (private file 0600, never committed).
    keys_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    #: TLS certificate and key (PEM). Without them the server only listens on loopback.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Largest request body accepted: a packet body with a few attachments, not a document store.
    max_body_bytes: int = 8 * 1024 * 1024
    #: Guidance: share "only with those who need it"; a cap also bounds the work of one submission.
    max_recipients: int = 25
    #: How old a signed request may be (RFC 9421 ``created``), and how far in the future.
    signature_max_age_seconds: int = 300
    signature_clock_skew_seconds: int = 5
    #: Requests per member per minute before 429.
    rate_limit_per_minute: int = 600
    #: Requests being handled at once (each holds a connection) before 503: a flood of slow uploads
    #: cannot exhaust the server's sockets and memory. /health is never refused.
    max_concurrent_requests: int = 128
    #: Seconds a request's body may take to arrive, once its signature has verified, before 408. A slow
    #: trickle would otherwise hold an in-flight slot as long as it liked; 8 MiB at 2 Mbit/s takes 34 s.
    body_read_timeout_seconds: float = 60.0
    #: Seconds an idle keep-alive connection stays open.
    keepalive_seconds: float = 15.0
    #: Tree heads are signed off the request path every N entries or T milliseconds.
    head_batch_entries: int = 64
    head_interval_ms: int = 500
    #: One instance at a time signs heads in the background, under a lease this long (renewed while it
    #: runs); when that instance dies another takes over once the lease lapses.
    head_lease_seconds: float = 10.0
    #: Alarm when this many entries are waiting for a signed head.
    head_lag_alarm_entries: int = 10_000
    #: A copy never opened this long after delivery is reported to its sender as undelivered,
    #: not silently dropped (MESH does the same after 5 days).
    undelivered_after_days: int = 5
    #: Sealed content is deleted this long after submission; the ledger and the manifest stay. The
    #: exchange is a conduit, not the case record: recipients keep what they need in their own systems.
    content_retention_days: int = 90
    #: How often the deadline worker looks for what has fallen due, and how long its lease lasts
    #: (one instance at a time runs it; another takes over once the lease lapses).
    deadline_check_seconds: float = 30.0
    deadline_lease_seconds: float = 120.0
    #: The structured record (JSON lines); None means <data_dir>/record.jsonl.
    record_log: Path | None = None
    #: While read-only (the record log or the store cannot be written), changes are refused at once
    #: for this long after a failure (the Retry-After they get), then the next one tries again.
    read_only_retry_seconds: float = 5.0
    #: Where the store is: None for the embedded SQLite file in ``data_dir``; else a PostgreSQL URL
    #: (``postgresql://...``), ``sqlite:PATH`` or a file path. See :func:`exchange.store.open_store`.
    database: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def database_path(self) -> Path:
        """The embedded SQLite file (where the store lives unless ``database`` says otherwise)."""
        return self.data_dir / "exchange.sqlite"

    @property
    def database_target(self) -> str | Path:
        """What :func:`exchange.store.open_store` opens: ``database`` if given, else the SQLite file."""
        return self.database if self.database else self.database_path

    @property
    def record_log_path(self) -> Path:
        return self.record_log if self.record_log is not None else self.data_dir / "record.jsonl"

    @property
    def server_key_path(self) -> Path:
        return self.keys_dir / "server.ed25519.pem"

    @property
    def server_public_key_path(self) -> Path:
        return self.keys_dir / "server.ed25519.pub"

    @property
    def uses_tls(self) -> bool:
        return self.tls_cert is not None and self.tls_key is not None
