"""Every SQL statement of the SQLite store, in one place. Values are always bound
parameters; lists travel as JSON arrays and are unpacked with ``json_each``."""

from __future__ import annotations

from sse_jobs.states import EventName

# Schema versions, applied in order; PRAGMA user_version records the last one applied.
MIGRATIONS: list[str] = [
    """
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
    """,
]

PRAGMAS = [
    "PRAGMA journal_mode = WAL",
    # FULL: a commit is on disk before the 202 or the event goes out, even across power loss.
    "PRAGMA synchronous = FULL",
    "PRAGMA temp_store = MEMORY",
]

JOB_COLUMNS = (
    "id, type, state, params, priority, attempt, max_attempts, timeout, progress, message, "
    "created_at, started_at, finished_at, not_before, result, result_file, error, "
    "last_event_id, cancel_requested, idempotency_key, request_hash, principal, "
    "callback_url, callback_events"
)

SELECT_JOB = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"  # noqa: S608 - constant columns
SELECT_JOB_BY_KEY = f"""
SELECT {JOB_COLUMNS} FROM jobs WHERE principal = ? AND idempotency_key = ?
"""  # noqa: S608 - constant columns
SELECT_STATE = "SELECT state FROM jobs WHERE id = ?"

INSERT_JOB = f"""
INSERT INTO jobs (id, type, state, params, priority, max_attempts, timeout, created_at,
                  not_before, last_event_id, idempotency_key, request_hash, principal,
                  callback_url, callback_events)
VALUES (:id, :type, 'queued', :params, :priority, :max_attempts, :timeout, :created_at,
        :created_at, 1, :idempotency_key, :request_hash, :principal, :callback_url,
        :callback_events)
RETURNING {JOB_COLUMNS}
"""  # noqa: S608 - constant columns

QUEUE_POSITION = """
SELECT count(*) FROM jobs
WHERE state = 'queued' AND (priority > :priority OR (priority = :priority AND id < :id))
"""

INSERT_EVENT = "INSERT INTO events (id, job_id, seq, event, data) VALUES (?, ?, ?, ?, ?)"


def insert_events(rows: int) -> str:
    """One INSERT of ``rows`` events: a single statement step for them all."""
    return INSERT_EVENT + ", (?, ?, ?, ?, ?)" * (rows - 1)


NEXT_EVENT_ID = "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)"

_GUARD = "WHERE id = :id AND state IN (SELECT value FROM json_each(:allowed))"

# One statement per state-changing event; each bumps last_event_id, which becomes the
# new event's seq, and returns the whole updated row.
RECORD: dict[EventName, str] = {
    EventName.RETRYING: f"""
        UPDATE jobs SET state = :state, not_before = :not_before, error = :error,
                        attempt = attempt - :refund, last_event_id = last_event_id + 1
        {_GUARD} RETURNING {JOB_COLUMNS}""",  # noqa: S608 - constant SQL pieces
    EventName.COMPLETED: f"""
        UPDATE jobs SET state = :state, finished_at = :at, result = :result,
                        result_file = :result_file, progress = 100, error = NULL,
                        last_event_id = last_event_id + 1
        {_GUARD} RETURNING {JOB_COLUMNS}""",  # noqa: S608 - constant SQL pieces
    EventName.FAILED: f"""
        UPDATE jobs SET state = :state, finished_at = :at, error = :error,
                        last_event_id = last_event_id + 1
        {_GUARD} RETURNING {JOB_COLUMNS}""",  # noqa: S608 - constant SQL pieces
    EventName.CANCELLED: f"""
        UPDATE jobs SET state = :state, finished_at = :at, error = :error,
                        last_event_id = last_event_id + 1
        {_GUARD} RETURNING {JOB_COLUMNS}""",  # noqa: S608 - constant SQL pieces
}

CLAIM = f"""
UPDATE jobs SET state = 'processing', attempt = attempt + 1,
                started_at = coalesce(started_at, :now), progress = 0, message = NULL,
                last_event_id = last_event_id + 1
WHERE id IN (SELECT id FROM jobs WHERE state = 'queued' AND not_before <= :now
             ORDER BY priority DESC, id LIMIT :limit)
RETURNING {JOB_COLUMNS}
"""  # noqa: S608 - constant columns

PROGRESS = """
UPDATE jobs SET progress = :progress, message = :message,
                last_event_id = last_event_id + :count
WHERE id = :id AND state = 'processing' AND attempt = :attempt
RETURNING last_event_id, principal, callback_url, callback_events
"""

REQUEST_CANCEL = f"""
UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'processing'
RETURNING {JOB_COLUMNS}
"""  # noqa: S608 - constant columns

JOB_COUNTS = "SELECT type, state, count(*) FROM jobs GROUP BY type, state"

NEXT_RUN_AT = "SELECT min(not_before) FROM jobs WHERE state = 'queued'"

COUNT_QUEUED = "SELECT count(*) FROM jobs WHERE state = 'queued'"

COUNT_ACTIVE = """
SELECT count(*) FROM jobs WHERE principal = ? AND state IN ('queued', 'processing')
"""

JOBS_IN_STATE = f"SELECT {JOB_COLUMNS} FROM jobs WHERE state = ? ORDER BY id"  # noqa: S608

LIST_JOBS = f"""
SELECT {JOB_COLUMNS} FROM jobs
WHERE (:principal IS NULL OR principal = :principal)
  AND (:any_state OR state IN (SELECT value FROM json_each(:states)))
  AND (:any_type OR type IN (SELECT value FROM json_each(:types)))
  AND (:before IS NULL OR id < :before)
ORDER BY id DESC LIMIT :limit
"""  # noqa: S608 - constant columns

JOB_EVENTS = """
SELECT e.id, e.job_id, e.seq, e.event, e.data, j.principal
FROM events e JOIN jobs j ON j.id = e.job_id
WHERE e.job_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?
"""

ALL_EVENTS = """
SELECT e.id, e.job_id, e.seq, e.event, e.data, j.principal
FROM events e JOIN jobs j ON j.id = e.job_id
WHERE e.id > :after AND (:principal IS NULL OR j.principal = :principal)
ORDER BY e.id LIMIT :limit
"""

LAST_EVENT_ID = "SELECT coalesce(max(id), 0) FROM events"

SELECT_SECRET = "SELECT value FROM secrets WHERE name = ?"  # noqa: S105 - a query

INSERT_SECRET = """
INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING
"""  # noqa: S105 - a query

DELETE_JOB = """
DELETE FROM jobs WHERE id = ? AND state IN ('completed', 'failed', 'cancelled') RETURNING id
"""

DELETE_EVENTS = "DELETE FROM events WHERE job_id = ?"

DELETE_ATTEMPTS = """
DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT id FROM deliveries WHERE job_id = ?)
"""

DELETE_DELIVERIES = "DELETE FROM deliveries WHERE job_id = ?"

DELIVERY_COLUMNS = "id, job_id, seq, event, url, state, attempts, next_attempt_at, created_at"

INSERT_DELIVERY = """
INSERT INTO deliveries (job_id, seq, event, url, state, next_attempt_at, created_at)
VALUES (?, ?, ?, ?, 'pending', ?, ?)
"""

DUE_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE state = 'pending' AND next_attempt_at <= ?
ORDER BY next_attempt_at LIMIT ?
"""  # noqa: S608 - constant columns

NEXT_DELIVERY_AT = "SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending'"

JOB_DELIVERIES = f"""
SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE job_id = ? ORDER BY id
"""  # noqa: S608 - constant columns

JOB_DELIVERY_ATTEMPTS = """
SELECT a.delivery_id, a.number, a.at, a.status, a.error, a.duration
FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.job_id = ? ORDER BY a.delivery_id, a.number
"""

INSERT_ATTEMPT = """
INSERT INTO delivery_attempts (delivery_id, number, at, status, error, duration)
VALUES (:id, :number, :at, :status, :error, :duration)
"""

UPDATE_DELIVERY = """
UPDATE deliveries SET state = :state, attempts = :number, next_attempt_at = :next_attempt_at
WHERE id = :id
"""

RETRY_DELIVERY = f"""
UPDATE deliveries SET state = 'pending', next_attempt_at = :now
WHERE id = :id AND job_id = :job_id AND state = 'dead'
RETURNING {DELIVERY_COLUMNS}
"""  # noqa: S608 - constant columns

FINISHED_BEFORE = """
SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?
ORDER BY finished_at LIMIT ?
"""
