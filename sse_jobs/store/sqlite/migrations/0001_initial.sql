-- The first schema: jobs, their events, server secrets, webhook deliveries and attempts.
CREATE TABLE jobs (
    id               TEXT PRIMARY KEY,
    type             TEXT NOT NULL,
    state            TEXT NOT NULL,
    params           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    timeout          REAL NOT NULL,
    progress         REAL NOT NULL DEFAULT 0,
    message          TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    not_before       REAL NOT NULL,
    result           BLOB,
    result_file      TEXT,
    error            TEXT,
    last_event_id    INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    idempotency_key  TEXT,
    request_hash     TEXT,
    principal        TEXT NOT NULL,
    callback_url     TEXT,
    callback_events  TEXT NOT NULL DEFAULT 'terminal'
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (principal, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (state, priority DESC, id);
CREATE INDEX jobs_principal ON jobs (principal, state);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    seq    INTEGER NOT NULL,
    event  TEXT NOT NULL,
    data   BLOB NOT NULL,
    UNIQUE (job_id, seq)
);
CREATE TABLE secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id          TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    event           TEXT NOT NULL,
    url             TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    created_at      REAL NOT NULL,
    UNIQUE (job_id, seq)
);
CREATE INDEX deliveries_due ON deliveries (state, next_attempt_at);
CREATE TABLE delivery_attempts (
    delivery_id INTEGER NOT NULL,
    number      INTEGER NOT NULL,
    at          REAL NOT NULL,
    status      INTEGER,
    error       TEXT,
    duration    REAL NOT NULL,
    PRIMARY KEY (delivery_id, number)
);
