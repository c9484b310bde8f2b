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
    # 4: the lifecycle and the feedback loop (issue 7). States are the lifecycle module's; every
    # deadline is a stored, indexed obligation the background worker reads, never memory.
    """
    ALTER TABLE packets ADD COLUMN approval_state TEXT NOT NULL DEFAULT 'not_needed';
    UPDATE packets SET approval_state = CASE
        WHEN status = 'awaiting_approval' THEN 'awaiting'
        WHEN status = 'refused' THEN 'refused'
        WHEN approval IS NOT NULL AND json_extract(approval, '$.decision') = 'approve' THEN 'approved'
        WHEN approval IS NOT NULL THEN 'refused'
        WHEN approval_due IS NOT NULL THEN 'owed'
        ELSE 'not_needed' END;
    ALTER TABLE packets ADD COLUMN supersedes TEXT REFERENCES packets(id);
    ALTER TABLE packets ADD COLUMN superseded_by TEXT REFERENCES packets(id);
    ALTER TABLE packets ADD COLUMN corrected_fields TEXT;
    ALTER TABLE packets ADD COLUMN in_reply_to TEXT;
    ALTER TABLE packets ADD COLUMN subject TEXT;
    ALTER TABLE packets ADD COLUMN expires_at TEXT;
    ALTER TABLE packets ADD COLUMN retain_until TEXT;
    ALTER TABLE packets ADD COLUMN content_removed_at TEXT;
    UPDATE packets SET subject = json_extract(CAST(manifest AS TEXT), '$.subject.pseudonym'),
        in_reply_to = json_extract(CAST(manifest AS TEXT), '$.in_reply_to');
    CREATE INDEX packets_subject ON packets(subject) WHERE subject IS NOT NULL;
    CREATE INDEX packets_outbox ON packets(sender_member, created, id);
    CREATE INDEX packets_queue ON packets(sender_agency, approval_state, created, id);
    CREATE INDEX packets_request ON packets(in_reply_to) WHERE in_reply_to IS NOT NULL;

    ALTER TABLE deliveries ADD COLUMN ack_key TEXT;
    ALTER TABLE deliveries ADD COLUMN reported_at TEXT;
    ALTER TABLE deliveries ADD COLUMN confirmed_at TEXT;
    ALTER TABLE deliveries ADD COLUMN closed_at TEXT;
    ALTER TABLE deliveries ADD COLUMN updated TEXT;
    ALTER TABLE deliveries ADD COLUMN packet_created TEXT;
    UPDATE deliveries SET packet_created = (SELECT created FROM packets WHERE packets.id = deliveries.packet_id);
    CREATE INDEX deliveries_inbox ON deliveries(recipient_member, packet_created, packet_id);

    -- What a recipient reported, and the sender's confirmation or query: signed statements over the
    -- manifest digest; any narrative is sealed (HPKE) to the member it is for.
    CREATE TABLE loop_statements (
        id TEXT PRIMARY KEY,
        packet_id TEXT NOT NULL REFERENCES packets(id),
        recipient_member TEXT NOT NULL,
        author_member TEXT NOT NULL REFERENCES members(id),
        type TEXT NOT NULL CHECK (type IN ('report', 'confirm', 'query')),
        action TEXT,
        statement BLOB NOT NULL,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL,
        sealed_note BLOB,
        note_key TEXT,
        created TEXT NOT NULL,
        FOREIGN KEY (packet_id, recipient_member) REFERENCES deliveries(packet_id, recipient_member)
    ) STRICT;
    CREATE INDEX loop_statements_delivery ON loop_statements(packet_id, recipient_member, created);

    -- Every deadline: who owes what by when. 'open' until met, cancelled or fired (escalated).
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
    ) STRICT;
    CREATE INDEX obligations_due ON obligations(state, due);
    CREATE INDEX obligations_packet ON obligations(packet_id, kind, state);
    CREATE INDEX obligations_request ON obligations(request_id, kind, state);

    -- An obligation that fired: visible to the member owed, their managers and the owing agency's lead.
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
    ) STRICT;
    CREATE INDEX escalations_raised ON escalations(raised_at, id);
    CREATE INDEX escalations_to ON escalations(owed_to_agency, raised_at);
    CREATE INDEX escalations_by ON escalations(owed_by_agency, raised_at);

    -- Background work runs on one instance at a time, under a renewable lease.
    CREATE TABLE leases (
        name TEXT PRIMARY KEY,
        holder TEXT NOT NULL,
        expires TEXT NOT NULL
    ) STRICT;

    -- Information requests: a signed request (no personal data) with details sealed to the holders.
    CREATE TABLE info_requests (
        id TEXT PRIMARY KEY,
        requester_member TEXT NOT NULL REFERENCES members(id),
        requester_agency TEXT NOT NULL REFERENCES agencies(id),
        holder_agency TEXT NOT NULL REFERENCES agencies(id),
        holder_member TEXT REFERENCES members(id),
        document BLOB NOT NULL,
        digest TEXT NOT NULL UNIQUE,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL,
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
        decline_sealed BLOB
    ) STRICT;
    CREATE INDEX info_requests_requester ON info_requests(requester_member, created, id);
    CREATE INDEX info_requests_holder ON info_requests(holder_agency, created, id);
    CREATE INDEX info_requests_subject ON info_requests(subject) WHERE subject IS NOT NULL;

    -- Decisions not to share, recorded with their reasons (the reasons in words sealed to the author).
    CREATE TABLE share_decisions (
        id TEXT PRIMARY KEY,
        member TEXT NOT NULL REFERENCES members(id),
        agency TEXT NOT NULL REFERENCES agencies(id),
        document BLOB NOT NULL,
        key_id TEXT NOT NULL,
        signature BLOB NOT NULL,
        sealed_note BLOB,
        subject TEXT,
        request_id TEXT,
        created TEXT NOT NULL
    ) STRICT;
    CREATE INDEX share_decisions_member ON share_decisions(member, created, id);
    CREATE INDEX share_decisions_subject ON share_decisions(subject) WHERE subject IS NOT NULL;

    -- The ledger index learns two more kinds: requests and subjects (pseudonyms), for the subject view.
    CREATE TABLE ledger_refs_v4 (
        kind TEXT NOT NULL CHECK (kind IN ('type', 'time', 'packet', 'member', 'agency', 'request', 'subject')),
        value TEXT NOT NULL,
        seq INTEGER NOT NULL REFERENCES ledger_entries(seq),
        PRIMARY KEY (kind, value, seq)
    ) STRICT, WITHOUT ROWID;
    INSERT INTO ledger_refs_v4 (kind, value, seq) SELECT kind, value, seq FROM ledger_refs;
    INSERT OR IGNORE INTO ledger_refs_v4 (kind, value, seq)
        SELECT 'subject', json_extract(CAST(entry AS TEXT), '$.details.subject'), seq FROM ledger_entries
        WHERE typeof(json_extract(CAST(entry AS TEXT), '$.details.subject')) = 'text';
    DROP TABLE ledger_refs;
    ALTER TABLE ledger_refs_v4 RENAME TO ledger_refs;
    """,
)
