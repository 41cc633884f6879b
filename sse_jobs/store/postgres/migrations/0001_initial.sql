-- The first schema: jobs with their attempt leases, events in one global order, server
-- secrets, webhook deliveries and attempts, shared rate limits and periodic-task holds.
CREATE TABLE jobs (
    id               text PRIMARY KEY,
    type             text NOT NULL,
    state            text NOT NULL,
    params           text NOT NULL,
    priority         integer NOT NULL,
    attempt          integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL,
    timeout          double precision NOT NULL,
    progress         double precision NOT NULL DEFAULT 0,
    message          text,
    created_at       double precision NOT NULL,
    started_at       double precision,
    finished_at      double precision,
    not_before       double precision NOT NULL,
    result           bytea,
    result_file      text,
    error            text,
    last_event_id    integer NOT NULL DEFAULT 0,
    cancel_requested boolean NOT NULL DEFAULT false,
    idempotency_key  text,
    request_hash     text,
    principal        text NOT NULL,
    callback_url     text,
    callback_events  text NOT NULL DEFAULT 'terminal',
    -- The node running the current attempt, and until when (database time) its lease runs.
    lease_owner      text,
    lease_expires_at double precision
);
CREATE UNIQUE INDEX jobs_idempotency ON jobs (principal, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX jobs_queue ON jobs (priority DESC, id) WHERE state = 'queued';
CREATE INDEX jobs_principal ON jobs (principal, state);
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 'processing';

CREATE TABLE events (
    id     bigint PRIMARY KEY,
    job_id text NOT NULL,
    seq    integer NOT NULL,
    event  text NOT NULL,
    data   bytea NOT NULL,
    UNIQUE (job_id, seq)
);

-- The last global event id handed out. Every transaction that stores events takes this
-- one row's lock last, just before it commits, so ids are handed out in commit order: an
-- event can never commit after a higher id has been seen.
CREATE TABLE event_counter (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    last_id bigint NOT NULL
);
INSERT INTO event_counter (last_id) VALUES (0);

CREATE TABLE secrets (
    name  text PRIMARY KEY,
    value bytea NOT NULL
);

CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    job_id          text NOT NULL,
    seq             integer NOT NULL,
    event           text NOT NULL,
    url             text NOT NULL,
    state           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at double precision NOT NULL,
    created_at      double precision NOT NULL,
    UNIQUE (job_id, seq)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE state = 'pending';

CREATE TABLE delivery_attempts (
    delivery_id bigint NOT NULL,
    number      integer NOT NULL,
    at          double precision NOT NULL,
    status      integer,
    error       text,
    duration    double precision NOT NULL,
    PRIMARY KEY (delivery_id, number)
);

CREATE TABLE rate_limits (
    key   text PRIMARY KEY,
    level double precision NOT NULL,
    at    double precision NOT NULL
);

CREATE TABLE task_holds (
    task   text PRIMARY KEY,
    holder text NOT NULL,
    until  double precision NOT NULL
);
