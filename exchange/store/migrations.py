"""Schema migrations, applied in order; ``meta.schema_version`` says how far a database has come.

Never edit a released migration: add a new one. Each runs in its own transaction.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: directory, packets, deliveries, the ledger and its tree.
    """
    CREATE TABLE agencies (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        kind TEXT NOT NULL,
        created TEXT NOT NULL
    ) STRICT;
    CREATE TABLE members (
        id TEXT PRIMARY KEY,
        agency_id TEXT NOT NULL REFERENCES agencies(id),
        display_name TEXT NOT NULL,
        roles TEXT NOT NULL,
        created TEXT NOT NULL,
        active INTEGER NOT NULL DEFAULT 1
    ) STRICT;
    CREATE INDEX members_agency ON members(agency_id);
    CREATE TABLE member_keys (
        key_id TEXT PRIMARY KEY,
        member_id TEXT NOT NULL REFERENCES members(id),
        use TEXT NOT NULL CHECK (use IN ('signing', 'encryption')),
        public_key BLOB NOT NULL,
        not_before TEXT NOT NULL,
        not_after TEXT,
        revoked_at TEXT,
        created TEXT NOT NULL
    ) STRICT;
    CREATE INDEX member_keys_member ON member_keys(member_id);
    CREATE TABLE request_nonces (
        key_id TEXT NOT NULL,
        nonce TEXT NOT NULL,
        expires TEXT NOT NULL,
        PRIMARY KEY (key_id, nonce)
    ) STRICT, WITHOUT ROWID;
    CREATE INDEX request_nonces_expiry ON request_nonces(expires);
    CREATE TABLE packets (
        id TEXT PRIMARY KEY,
        sender_member TEXT NOT NULL REFERENCES members(id),
        sender_agency TEXT NOT NULL REFERENCES agencies(id),
        manifest BLOB NOT NULL,
        manifest_digest TEXT NOT NULL UNIQUE,
        signature BLOB NOT NULL,
        body BLOB NOT NULL,
        purpose TEXT NOT NULL,
        kind TEXT NOT NULL,
        urgency TEXT NOT NULL,
        status TEXT NOT NULL,
        created TEXT NOT NULL,
        approval TEXT,
        ack_due TEXT,
        action_due TEXT,
        approval_due TEXT
    ) STRICT;
    CREATE INDEX packets_sender ON packets(sender_member, created);
    CREATE INDEX packets_status ON packets(sender_agency, status);
    CREATE TABLE deliveries (
        packet_id TEXT NOT NULL REFERENCES packets(id),
        recipient_member TEXT NOT NULL REFERENCES members(id),
        recipient_agency TEXT NOT NULL REFERENCES agencies(id),
        encryption_key TEXT NOT NULL,
        sealed_key BLOB NOT NULL,
        status TEXT NOT NULL,
        delivered_at TEXT,
        opened_at TEXT,
        acknowledged_at TEXT,
        ack_signature BLOB,
        PRIMARY KEY (packet_id, recipient_member)
    ) STRICT;
    CREATE INDEX deliveries_recipient ON deliveries(recipient_member, status);
    CREATE TABLE ledger_entries (
        seq INTEGER PRIMARY KEY,
        entry BLOB NOT NULL,
        leaf_hash BLOB NOT NULL
    ) STRICT;
    CREATE TABLE ledger_nodes (
        level INTEGER NOT NULL,
        idx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (level, idx)
    ) STRICT, WITHOUT ROWID;
    CREATE TABLE tree_heads (
        size INTEGER PRIMARY KEY,
        root_hash BLOB NOT NULL,
        timestamp TEXT NOT NULL,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL
    ) STRICT;
    -- The ledger is append-only: the database itself refuses edits and deletions.
    CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
    CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
        BEGIN SELECT RAISE(ABORT, 'ledger entries are append-only'); END;
    CREATE TRIGGER ledger_nodes_no_update BEFORE UPDATE ON ledger_nodes
        BEGIN SELECT RAISE(ABORT, 'ledger nodes are append-only'); END;
    CREATE TRIGGER tree_heads_no_update BEFORE UPDATE ON tree_heads
        BEGIN SELECT RAISE(ABORT, 'tree heads are append-only'); END;
    """,
    # 2: the directory says which purposes each agency may send and receive (NULL: no list).
    """
    ALTER TABLE agencies ADD COLUMN send_purposes TEXT;
    ALTER TABLE agencies ADD COLUMN receive_purposes TEXT;
    """,
    # 3: an index of ledger entries by type, time, packet, member and agency, for auditors' filters.
    # Existing entries are indexed from their own JSON (the same fields exchange.ledger.index reads).
    """
    CREATE TABLE ledger_refs (
        kind TEXT NOT NULL CHECK (kind IN ('type', 'time', 'packet', 'member', 'agency')),
        value TEXT NOT NULL,
        seq INTEGER NOT NULL REFERENCES ledger_entries(seq),
        PRIMARY KEY (kind, value, seq)
    ) STRICT, WITHOUT ROWID;
    INSERT OR IGNORE INTO ledger_refs (kind, value, seq)
        SELECT kind, value, seq FROM (
            SELECT 'type' AS kind, json_extract(CAST(entry AS TEXT), '$.type') AS value, seq FROM ledger_entries
            UNION ALL SELECT 'time', json_extract(CAST(entry AS TEXT), '$.time'), seq FROM ledger_entries
            UNION ALL SELECT 'packet', json_extract(CAST(entry AS TEXT), '$.packet'), seq FROM ledger_entries
            UNION ALL SELECT 'member', json_extract(CAST(entry AS TEXT), '$.actor.member'), seq FROM ledger_entries
            UNION ALL SELECT 'member', json_extract(CAST(entry AS TEXT), '$.details.member'), seq FROM ledger_entries
            UNION ALL SELECT 'member', json_extract(CAST(entry AS TEXT), '$.details.recipient'), seq FROM ledger_entries
            UNION ALL SELECT 'agency', json_extract(CAST(entry AS TEXT), '$.actor.agency'), seq FROM ledger_entries
            UNION ALL SELECT 'agency', json_extract(CAST(entry AS TEXT), '$.details.agency'), seq FROM ledger_entries
            UNION ALL SELECT 'agency', json_extract(CAST(entry AS TEXT), '$.details.recipient_agency'), seq
                FROM ledger_entries
        ) WHERE typeof(value) = 'text' AND value != '';
    """,
)
