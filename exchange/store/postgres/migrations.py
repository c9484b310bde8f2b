"""The PostgreSQL schema, as migrations applied in order; ``schema_version`` says how far a database has come.

Never edit a released migration: add a new one. Each runs in its own transaction (PostgreSQL's DDL is
transactional, so a step applies whole or not at all), under an advisory lock so that instances
starting together migrate once.

The tables are SQLite's (exchange.store.migrations), column for column, so one set of row readers
serves both engines (exchange.store.rows): times are ISO 8601 text and compare as text, JSON stays
text, bytes are ``bytea``. Every text column is ``COLLATE "C"``: SQLite compares text byte by byte,
and a database created with a language's collation would otherwise order listings and page cursors
differently.
"""

from __future__ import annotations

#: Text that compares byte by byte, as SQLite's BINARY collation does.
_TEXT = 'text COLLATE "C"'

_VERSION_1 = """
CREATE TABLE agencies (
    -- SQLite's rowid: equal sort keys come back in the order they were stored.
    stored bigint GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    created TEXT NOT NULL,
    send_purposes TEXT,
    receive_purposes TEXT
);
CREATE TABLE members (
    -- SQLite's rowid: equal sort keys come back in the order they were stored.
    stored bigint GENERATED ALWAYS AS IDENTITY,
    id TEXT PRIMARY KEY,
    agency_id TEXT NOT NULL REFERENCES agencies(id),
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    created TEXT NOT NULL,
    active boolean NOT NULL DEFAULT true
);
CREATE INDEX members_agency ON members(agency_id);
CREATE INDEX members_directory ON members(created, id) WHERE active;
CREATE TABLE member_keys (
    -- SQLite's rowid: equal sort keys come back in the order they were stored.
    stored bigint GENERATED ALWAYS AS IDENTITY,
    key_id TEXT PRIMARY KEY,
    member_id TEXT NOT NULL REFERENCES members(id),
    use TEXT NOT NULL CHECK (use IN ('signing', 'encryption')),
    public_key bytea NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT,
    revoked_at TEXT,
    created TEXT NOT NULL
);
CREATE INDEX member_keys_member ON member_keys(member_id);
CREATE TABLE request_nonces (
    key_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    expires TEXT NOT NULL,
    PRIMARY KEY (key_id, nonce)
);
CREATE INDEX request_nonces_expiry ON request_nonces(expires);
CREATE TABLE packets (
    id TEXT PRIMARY KEY,
    sender_member TEXT NOT NULL REFERENCES members(id),
    sender_agency TEXT NOT NULL REFERENCES agencies(id),
    manifest bytea NOT NULL,
    manifest_digest TEXT NOT NULL UNIQUE,
    signature bytea NOT NULL,
    body bytea NOT NULL,
    purpose TEXT NOT NULL,
    kind TEXT NOT NULL,
    urgency TEXT NOT NULL,
    status TEXT NOT NULL,
    created TEXT NOT NULL,
    approval TEXT,
    ack_due TEXT,
    action_due TEXT,
    approval_due TEXT,
    approval_state TEXT NOT NULL DEFAULT 'not_needed',
    supersedes TEXT REFERENCES packets(id),
    superseded_by TEXT REFERENCES packets(id),
    corrected_fields TEXT,
    in_reply_to TEXT,
    subject TEXT,
    expires_at TEXT,
    retain_until TEXT,
    content_removed_at TEXT
);
CREATE INDEX packets_status ON packets(sender_agency, status);
CREATE INDEX packets_subject ON packets(subject) WHERE subject IS NOT NULL;
CREATE INDEX packets_outbox ON packets(sender_member, created, id);
CREATE INDEX packets_queue ON packets(sender_agency, approval_state, created, id);
CREATE INDEX packets_request ON packets(in_reply_to) WHERE in_reply_to IS NOT NULL;
CREATE TABLE deliveries (
    packet_id TEXT NOT NULL REFERENCES packets(id),
    recipient_member TEXT NOT NULL REFERENCES members(id),
    recipient_agency TEXT NOT NULL REFERENCES agencies(id),
    encryption_key TEXT NOT NULL,
    sealed_key bytea NOT NULL,
    status TEXT NOT NULL,
    delivered_at TEXT,
    opened_at TEXT,
    acknowledged_at TEXT,
    ack_signature bytea,
    ack_key TEXT,
    reported_at TEXT,
    confirmed_at TEXT,
    closed_at TEXT,
    updated TEXT,
    packet_created TEXT,
    PRIMARY KEY (packet_id, recipient_member)
);
CREATE INDEX deliveries_recipient ON deliveries(recipient_member, status);
CREATE INDEX deliveries_inbox ON deliveries(recipient_member, packet_created, packet_id);
CREATE TABLE loop_statements (
    id TEXT PRIMARY KEY,
    packet_id TEXT NOT NULL REFERENCES packets(id),
    recipient_member TEXT NOT NULL,
    author_member TEXT NOT NULL REFERENCES members(id),
    type TEXT NOT NULL CHECK (type IN ('report', 'confirm', 'query')),
    action TEXT,
    statement bytea NOT NULL,
    key_id TEXT NOT NULL,
    signature bytea NOT NULL,
    sealed_note bytea,
    note_key TEXT,
    created TEXT NOT NULL,
    FOREIGN KEY (packet_id, recipient_member) REFERENCES deliveries(packet_id, recipient_member)
);
CREATE INDEX loop_statements_delivery ON loop_statements(packet_id, recipient_member, created);
CREATE TABLE obligations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    packet_id TEXT,
    request_id TEXT,
    owed_by_member TEXT,
    owed_by_agency TEXT,
    owed_to_member TEXT,
    owed_to_agency TEXT,
    due TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'met', 'cancelled', 'fired')),
    settled_at TEXT,
    created TEXT NOT NULL
);
CREATE INDEX obligations_due ON obligations(state, due);
CREATE INDEX obligations_packet ON obligations(packet_id, kind, state);
CREATE INDEX obligations_request ON obligations(request_id, kind, state);
CREATE TABLE escalations (
    id TEXT PRIMARY KEY,
    obligation_id TEXT NOT NULL UNIQUE REFERENCES obligations(id),
    kind TEXT NOT NULL,
    packet_id TEXT,
    request_id TEXT,
    owed_by_member TEXT,
    owed_by_agency TEXT,
    owed_to_member TEXT,
    owed_to_agency TEXT,
    due TEXT NOT NULL,
    raised_at TEXT NOT NULL,
    acknowledged_at TEXT,
    acknowledged_by TEXT,
    resolved_at TEXT
);
CREATE INDEX escalations_raised ON escalations(raised_at, id);
CREATE INDEX escalations_to ON escalations(owed_to_agency, raised_at);
CREATE INDEX escalations_by ON escalations(owed_by_agency, raised_at);
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires TEXT NOT NULL
);
CREATE TABLE info_requests (
    id TEXT PRIMARY KEY,
    requester_member TEXT NOT NULL REFERENCES members(id),
    requester_agency TEXT NOT NULL REFERENCES agencies(id),
    holder_agency TEXT NOT NULL REFERENCES agencies(id),
    holder_member TEXT REFERENCES members(id),
    document bytea NOT NULL,
    digest TEXT NOT NULL UNIQUE,
    key_id TEXT NOT NULL,
    signature bytea NOT NULL,
    sealed TEXT,
    purpose TEXT NOT NULL,
    urgency TEXT NOT NULL,
    subject TEXT,
    state TEXT NOT NULL CHECK (state IN ('open', 'answered', 'declined', 'withdrawn')),
    created TEXT NOT NULL,
    answer_due TEXT,
    answered_by TEXT,
    answered_at TEXT,
    decline TEXT,
    decline_sealed bytea
);
CREATE INDEX info_requests_requester ON info_requests(requester_member, created, id);
CREATE INDEX info_requests_holder ON info_requests(holder_agency, created, id);
CREATE INDEX info_requests_subject ON info_requests(subject) WHERE subject IS NOT NULL;
CREATE TABLE share_decisions (
    id TEXT PRIMARY KEY,
    member TEXT NOT NULL REFERENCES members(id),
    agency TEXT NOT NULL REFERENCES agencies(id),
    document bytea NOT NULL,
    key_id TEXT NOT NULL,
    signature bytea NOT NULL,
    sealed_note bytea,
    subject TEXT,
    request_id TEXT,
    created TEXT NOT NULL
);
CREATE INDEX share_decisions_member ON share_decisions(member, created, id);
CREATE INDEX share_decisions_agency ON share_decisions(agency, created, id);
CREATE INDEX share_decisions_subject ON share_decisions(subject) WHERE subject IS NOT NULL;
CREATE INDEX share_decisions_request ON share_decisions(request_id) WHERE request_id IS NOT NULL;

CREATE TABLE ledger_entries (
    seq bigint PRIMARY KEY CHECK (seq >= 0),
    entry bytea NOT NULL,
    leaf_hash bytea NOT NULL
);
CREATE TABLE ledger_nodes (
    level bigint NOT NULL,
    idx bigint NOT NULL,
    hash bytea NOT NULL,
    PRIMARY KEY (level, idx)
);
CREATE TABLE ledger_refs (
    kind TEXT NOT NULL CHECK (kind IN ('type', 'time', 'packet', 'member', 'agency', 'request', 'subject')),
    value TEXT NOT NULL,
    seq bigint NOT NULL REFERENCES ledger_entries(seq),
    PRIMARY KEY (kind, value, seq)
);
CREATE TABLE tree_heads (
    size bigint PRIMARY KEY,
    root_hash bytea NOT NULL,
    timestamp TEXT NOT NULL,
    key_id TEXT NOT NULL,
    signature bytea NOT NULL
);
-- The ledger is append-only: the database itself refuses edits and deletions (and TRUNCATE, which
-- row triggers would not see), as SQLite's triggers do.
CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% are append-only', TG_ARGV[0];
END
$$;
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_entries
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only('ledger entries');
CREATE TRIGGER ledger_nodes_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_nodes
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only('ledger nodes');
CREATE TRIGGER ledger_refs_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ledger_refs
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only('ledger refs');
CREATE TRIGGER tree_heads_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON tree_heads
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only('tree heads');
"""

#: 2: the ledger's lock and its next sequence number in one round trip. The function is VOLATILE, so the
#: SELECT after the lock takes a snapshot of its own and sees what the lock's previous holder committed.
_VERSION_2 = """
CREATE FUNCTION exchange_lock_ledger(lock_key bigint) RETURNS bigint LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    RETURN (SELECT COALESCE(MAX(seq) + 1, 0) FROM ledger_entries);
END
$$;
"""

MIGRATIONS: tuple[str, ...] = (
    # 1: the whole schema of SQLite's migrations 1-4 at once (every TEXT column compared as SQLite does).
    _VERSION_1.replace(" TEXT", " " + _TEXT),
    _VERSION_2,
)
