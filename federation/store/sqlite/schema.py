"""The tables of the SQLite store, and how a store written by an earlier release gains what it lacks."""
from __future__ import annotations

import sqlite3

from federation.store.retention import TERMINAL_SQL

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    site TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    vetoed_by TEXT NOT NULL DEFAULT '[]',
    explanation TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE INDEX IF NOT EXISTS jobs_tenant ON jobs(tenant, created_at);
CREATE INDEX IF NOT EXISTS jobs_tenant_state ON jobs(tenant, state);
CREATE TABLE IF NOT EXISTS attempts (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    number INTEGER NOT NULL,
    site TEXT NOT NULL,
    state TEXT NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    started_at REAL NOT NULL DEFAULT 0,
    ended_at REAL NOT NULL DEFAULT 0,
    binding TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job_id, number)
);
CREATE INDEX IF NOT EXISTS attempts_live ON attempts(site, state);
CREATE INDEX IF NOT EXISTS attempts_state ON attempts(state);
CREATE TABLE IF NOT EXISTS logs (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    data BLOB NOT NULL,
    PRIMARY KEY (job_id, attempt, offset)
);
CREATE TABLE IF NOT EXISTS artifacts (
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,          -- 0: an input of the job, given to every attempt
    name TEXT NOT NULL,
    data BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt, name)
);
CREATE TABLE IF NOT EXISTS trainings (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    actor TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    round INTEGER NOT NULL,
    model_job TEXT NOT NULL,
    message TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
    training_id TEXT NOT NULL REFERENCES trainings(id),
    number INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL,
    participants TEXT NOT NULL,
    aggregator TEXT NOT NULL,
    steps TEXT NOT NULL,
    aggregate_job TEXT NOT NULL,
    reveals TEXT NOT NULL,
    reported TEXT NOT NULL,
    lost TEXT NOT NULL,
    bytes_moved INTEGER NOT NULL,
    metrics TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    PRIMARY KEY (training_id, number, attempt)
);
CREATE TABLE IF NOT EXISTS sites (
    name TEXT PRIMARY KEY,
    jurisdiction TEXT NOT NULL,
    region TEXT NOT NULL,
    labels TEXT NOT NULL,
    datasets TEXT NOT NULL,
    cpus REAL NOT NULL,
    memory INTEGER NOT NULL,
    gpus REAL NOT NULL,
    state TEXT NOT NULL,
    registered_at REAL NOT NULL,
    last_heartbeat REAL NOT NULL,
    inventory TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
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
    serial TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    first_seen REAL NOT NULL,
    revoked_at REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS certificates_name ON certificates(name);
CREATE TABLE IF NOT EXISTS revoked_names (
    name TEXT PRIMARY KEY,
    revoked_at REAL NOT NULL     -- every certificate for this name issued up to then is refused
);
CREATE TABLE IF NOT EXISTS submissions (
    actor TEXT NOT NULL,
    request_id TEXT NOT NULL,
    spec_sha256 TEXT NOT NULL,
    job_ids TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (actor, request_id)
);
CREATE TABLE IF NOT EXISTS leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    address TEXT NOT NULL,
    term INTEGER NOT NULL,
    since REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS compacted_jobs (   -- jobs removed by retention: their final state, for dependants
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    array_id TEXT NOT NULL,
    gang_id TEXT NOT NULL,
    state TEXT NOT NULL,
    ended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS compacted_jobs_array ON compacted_jobs(array_id) WHERE array_id != '';
CREATE TABLE IF NOT EXISTS compacted_usage (  -- the attempts that ran, of jobs removed by retention
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    queue TEXT NOT NULL,
    site TEXT NOT NULL,
    gpu_model TEXT NOT NULL,
    cpus REAL NOT NULL,
    memory REAL NOT NULL,
    gpus REAL NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
CREATE INDEX IF NOT EXISTS compacted_usage_ended ON compacted_usage(ended_at);
CREATE TABLE IF NOT EXISTS join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    attributes TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL NOT NULL DEFAULT 0
);
"""
# Columns added after the first release.
ADDED = (
    ("attempts", "binding", "TEXT NOT NULL DEFAULT ''"), ("sites", "inventory", "TEXT NOT NULL DEFAULT ''"),
    ("jobs", "queue", "TEXT NOT NULL DEFAULT 'default'"), ("attempts", "gpu_model", "TEXT NOT NULL DEFAULT ''"),
    ("jobs", "array_id", "TEXT NOT NULL DEFAULT ''"), ("jobs", "array_index", "INTEGER NOT NULL DEFAULT 0"),
    ("attempts", "stop_requested_at", "REAL NOT NULL DEFAULT 0"),
    ("attempts", "stop_reason", "TEXT NOT NULL DEFAULT ''"),
    ("jobs", "gang_id", "TEXT NOT NULL DEFAULT ''"), ("jobs", "not_before", "REAL NOT NULL DEFAULT 0"),
    ("sites", "autonomous", "INTEGER NOT NULL DEFAULT 0"), ("sites", "agreement_key", "TEXT NOT NULL DEFAULT ''"),
    ("sites", "pricing", "TEXT NOT NULL DEFAULT ''"), ("sites", "elastic", "TEXT NOT NULL DEFAULT ''"),
    ("attempts", "node_type", "TEXT NOT NULL DEFAULT ''"), ("attempts", "price", "REAL NOT NULL DEFAULT 0"),
    ("compacted_usage", "price", "REAL NOT NULL DEFAULT 0"), ("rounds", "keys", "TEXT NOT NULL DEFAULT '{}'"),
    ("sites", "agreement_proof", "TEXT NOT NULL DEFAULT ''"), ("jobs", "submitter", "TEXT NOT NULL DEFAULT ''"),
)


def create_or_upgrade(db: sqlite3.Connection) -> None:
    """Create the tables a store lacks, add the columns added since it was written, and their indexes."""
    db.executescript(SCHEMA)
    for table, column, decl in ADDED:
        if column not in {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_array ON jobs(array_id) WHERE array_id != ''")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_gang ON jobs(gang_id) WHERE gang_id != ''")
    # Retention (federation.store.retention): ended jobs oldest first, and a submission by its first job.
    db.execute(f"CREATE INDEX IF NOT EXISTS jobs_ended ON jobs(updated_at, id) WHERE state IN {TERMINAL_SQL}")
    db.execute("CREATE INDEX IF NOT EXISTS submissions_first ON submissions(json_extract(job_ids, '$[0]'))")
