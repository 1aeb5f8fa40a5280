"""The tables of the PostgreSQL store: those of the SQLite store, in PostgreSQL's types.

Text that is sorted or compared by range is COLLATE "C" so that it orders by code point, as
SQLite and Python do, whatever the database's locale. JSON stays text, as in SQLite, so that one
set of row decoders (federation.store.sqlite.rows) serves both.
"""
from __future__ import annotations

import hashlib
from typing import Any

import psycopg

from federation.store.retention import TERMINAL_SQL

# pg_advisory_xact_lock keys (one bigint each); see database.py for the per-log keys.
SCHEMA_LOCK = 0x6665_6463_746C_0001
AUDIT_LOCK = 0x6665_6463_746C_0002
LEADERSHIP_LOCK = 0x6665_6463_746C_0003

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT COLLATE "C" NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL,
    vetoed_by TEXT NOT NULL DEFAULT '[]',
    explanation TEXT,
    queue TEXT NOT NULL DEFAULT 'default',
    array_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    array_index BIGINT NOT NULL DEFAULT 0,
    gang_id TEXT COLLATE "C" NOT NULL DEFAULT '',
    not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
    submitter TEXT NOT NULL DEFAULT ''
);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS submitter TEXT NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, created_at);
CREATE INDEX IF NOT EXISTS jobs_tenant_state ON jobs(tenant, state);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs(created_at, id);
CREATE INDEX IF NOT EXISTS jobs_array ON jobs(array_id) WHERE array_id != '';
CREATE INDEX IF NOT EXISTS jobs_gang ON jobs(gang_id) WHERE gang_id != '';
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT COLLATE "C" NOT NULL REFERENCES jobs(id),
    number BIGINT NOT NULL,
    site TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    ended_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    binding TEXT NOT NULL DEFAULT '',
    gpu_model TEXT NOT NULL DEFAULT '',
    stop_requested_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    stop_reason TEXT NOT NULL DEFAULT '',
    node_type TEXT NOT NULL DEFAULT '',
    price DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, number)
);
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS node_type TEXT NOT NULL DEFAULT '';
ALTER TABLE attempts ADD COLUMN IF NOT EXISTS price DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS attempts_live ON attempts(site, state);
CREATE INDEX IF NOT EXISTS attempts_state ON attempts(state);
CREATE INDEX IF NOT EXISTS attempts_started ON attempts(started_at) WHERE started_at > 0;
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,
    "offset" BIGINT NOT NULL,
    data BYTEA NOT NULL,
    PRIMARY KEY (job_id, attempt, "offset")
);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,           -- 0: an input of the job, given to every attempt
    name TEXT COLLATE "C" NOT NULL,
    data BYTEA NOT NULL,
    sha256 TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, attempt, name)
);
CREATE TABLE IF NOT EXISTS trainings (
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT NOT NULL,
    actor TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    round BIGINT NOT NULL,
    model_job TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    training_id TEXT COLLATE "C" NOT NULL REFERENCES trainings(id),
    number BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    state TEXT NOT NULL,
    participants TEXT NOT NULL,
    aggregator TEXT NOT NULL,
    steps TEXT NOT NULL,
    aggregate_job TEXT NOT NULL,
    reveals TEXT NOT NULL,
    reported TEXT NOT NULL,
    lost TEXT NOT NULL,
    bytes_moved BIGINT NOT NULL,
    metrics TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (training_id, number, attempt)
);
ALTER TABLE rounds ADD COLUMN IF NOT EXISTS keys TEXT NOT NULL DEFAULT '{}';
CREATE TABLE IF NOT EXISTS sites (
    name TEXT COLLATE "C" PRIMARY KEY,
    jurisdiction TEXT NOT NULL,
    region TEXT NOT NULL,
    labels TEXT NOT NULL,
    datasets TEXT NOT NULL,
    cpus DOUBLE PRECISION NOT NULL,
    memory BIGINT NOT NULL,
    gpus DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL,
    registered_at DOUBLE PRECISION NOT NULL,
    last_heartbeat DOUBLE PRECISION NOT NULL,
    inventory TEXT NOT NULL DEFAULT '',
    autonomous BOOLEAN NOT NULL DEFAULT false,
    agreement_key TEXT NOT NULL DEFAULT '',
    pricing TEXT NOT NULL DEFAULT '',
    elastic TEXT NOT NULL DEFAULT ''
);
ALTER TABLE sites ADD COLUMN IF NOT EXISTS pricing TEXT NOT NULL DEFAULT '';
ALTER TABLE sites ADD COLUMN IF NOT EXISTS elastic TEXT NOT NULL DEFAULT '';
ALTER TABLE sites ADD COLUMN IF NOT EXISTS agreement_proof TEXT NOT NULL DEFAULT '';
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev TEXT NOT NULL,
    hash TEXT NOT NULL,
    signature TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_subject ON audit(subject);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT COLLATE "C" PRIMARY KEY,
    name TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    revoked_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS certificates_name ON certificates(name);
CREATE TABLE IF NOT EXISTS revoked_names (
    name TEXT PRIMARY KEY,
    revoked_at DOUBLE PRECISION NOT NULL   -- every certificate for this name issued up to then is refused
);
CREATE TABLE IF NOT EXISTS submissions (
    actor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    job_ids TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (actor, request_id)
);
CREATE TABLE IF NOT EXISTS leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    address TEXT NOT NULL,
    term BIGINT NOT NULL,
    since DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS compacted_jobs (   -- jobs removed by retention: their final state, for dependants
    id TEXT COLLATE "C" PRIMARY KEY,
    tenant TEXT NOT NULL,
    array_id TEXT COLLATE "C" NOT NULL,
    gang_id TEXT COLLATE "C" NOT NULL,
    state TEXT NOT NULL,
    ended_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS compacted_jobs_array ON compacted_jobs(array_id) WHERE array_id != '';
CREATE TABLE IF NOT EXISTS compacted_usage (  -- the attempts that ran, of jobs removed by retention
    job_id TEXT COLLATE "C" NOT NULL,
    attempt BIGINT NOT NULL,
    tenant TEXT NOT NULL,
    queue TEXT NOT NULL,
    site TEXT NOT NULL,
    gpu_model TEXT NOT NULL,
    cpus DOUBLE PRECISION NOT NULL,
    memory DOUBLE PRECISION NOT NULL,
    gpus DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at DOUBLE PRECISION NOT NULL,
    price DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, attempt)
);
ALTER TABLE compacted_usage ADD COLUMN IF NOT EXISTS price DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS compacted_usage_ended ON compacted_usage(ended_at);
-- Retention (federation.store.retention): ended jobs oldest first, and a submission by its first job.
CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(updated_at, id) WHERE state IN {terminal};
CREATE INDEX IF NOT EXISTS submissions_first ON submissions(((job_ids::jsonb) ->> 0));
CREATE TABLE IF NOT EXISTS join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    expires_at DOUBLE PRECISION NOT NULL,
    used_at DOUBLE PRECISION NOT NULL DEFAULT 0
);
"""


def create(conn: psycopg.Connection[Any]) -> None:
    """Create the tables a database lacks. Replicas starting together take turns (CREATE ... IF NOT
    EXISTS alone races). Columns added in later releases go here as ALTER TABLE ... ADD COLUMN IF NOT
    EXISTS, as the SQLite store's ADDED. A database already at this schema is left alone: CREATE
    INDEX IF NOT EXISTS locks its table before it looks, and would deadlock with a live leader's
    writes when a replica starts beside it."""
    ddl = SCHEMA.replace("{terminal}", TERMINAL_SQL)
    version = hashlib.sha256(ddl.encode()).hexdigest()
    if _version(conn) == version:
        return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(ddl)
        conn.execute("INSERT INTO meta (key, value) VALUES ('schema', %s)"
                     " ON CONFLICT (key) DO UPDATE SET value=excluded.value", (version,))


def _version(conn: psycopg.Connection[Any]) -> str:
    present = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
    if not present or present[0] is not True:
        return ""
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    return str(row[0]) if row else ""
