-- Every statement of the PostgreSQL store (psycopg parameters: %(name)s). Values are bound
-- parameters, a list is one array parameter. Rows of the jobs table are always returned
-- with the columns of select_job, in that order. Lease times are the database's clock
-- (clock_timestamp()), so that the nodes' own clocks never decide whether a lease holds.

-- name: migration_lock
-- Two nodes starting at once must not both migrate.
SELECT pg_advisory_xact_lock(727274001);

-- name: create_schema_version
CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL);

-- name: schema_version
SELECT coalesce(max(version), 0) FROM schema_version;

-- name: set_schema_version
INSERT INTO schema_version (version) VALUES (%(version)s);

-- name: select_job
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs WHERE id = %(id)s;

-- name: select_job_by_key
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs WHERE principal = %(principal)s AND idempotency_key = %(key)s;

-- name: select_state
SELECT state FROM jobs WHERE id = %(id)s;

-- name: insert_job
-- Nothing when another node stored the same idempotency key first.
INSERT INTO jobs (id, type, state, params, priority, max_attempts, timeout, created_at,
                  not_before, last_event_id, idempotency_key, request_hash, principal,
                  callback_url, callback_events, rerun_of, run_at, tags)
VALUES (%(id)s, %(type)s, 'queued', %(params)s, %(priority)s, %(max_attempts)s, %(timeout)s,
        %(created_at)s,
        greatest(%(created_at)s, coalesce(%(run_at)s::double precision, %(created_at)s)), 1,
        %(idempotency_key)s, %(request_hash)s, %(principal)s, %(callback_url)s,
        %(callback_events)s, %(rerun_of)s, %(run_at)s, %(tags)s)
ON CONFLICT (principal, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: queue_depth
SELECT count(*),
       count(*) FILTER (WHERE priority > %(priority)s OR (priority = %(priority)s AND id < %(id)s))
FROM jobs WHERE state = 'queued';

-- name: take_event_ids
-- Taken last in a transaction that stores events, and held until it commits: ids are
-- handed out in commit order (see event_counter in the schema).
UPDATE event_counter SET last_id = last_id + %(count)s RETURNING last_id;

-- name: copy_events
COPY events (id, job_id, seq, event, data) FROM STDIN;

-- name: notify_events
-- Delivered at commit to every node listening: a hint to read the events table up to it.
SELECT pg_notify('sse_jobs_events', %(last_id)s);

-- name: listen_events
LISTEN sse_jobs_events;

-- name: listen_cancels
LISTEN sse_jobs_cancels;

-- name: listen_queued
LISTEN sse_jobs_queued;

-- name: notify_queued
-- A job is queued (new: with its priority; to retry, or given back: with none): nodes with
-- free workers look for work, and give back held attempts it outranks.
SELECT pg_notify('sse_jobs_queued', %(priority)s);

-- name: record_retrying
-- Each state-changing event is one UPDATE that bumps last_event_id under the job row's
-- lock (the new event's seq: gap-free whichever node writes), guarded by the states the
-- event may be recorded in and, for an attempt's outcome, by the fence: the attempt, and
-- this node's lease still running (or, for another node's attempt, its lease run out).
UPDATE jobs SET state = %(state)s, not_before = %(not_before)s, error = %(error)s,
                attempt = attempt - %(refund)s, last_event_id = last_event_id + 1,
                lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND state = ANY(%(allowed)s)
  AND (%(attempt)s::integer IS NULL OR (attempt = %(attempt)s AND CASE
       WHEN %(expired)s THEN lease_expires_at < extract(epoch FROM clock_timestamp())
       ELSE lease_owner = %(node)s AND lease_expires_at >= extract(epoch FROM clock_timestamp())
       END))
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: record_completed
UPDATE jobs SET state = %(state)s, finished_at = %(at)s, result = %(result)s,
                result_file = %(result_file)s, progress = 100, error = NULL,
                last_event_id = last_event_id + 1, lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND state = ANY(%(allowed)s)
  AND (%(attempt)s::integer IS NULL OR (attempt = %(attempt)s AND CASE
       WHEN %(expired)s THEN lease_expires_at < extract(epoch FROM clock_timestamp())
       ELSE lease_owner = %(node)s AND lease_expires_at >= extract(epoch FROM clock_timestamp())
       END))
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: record_failed
UPDATE jobs SET state = %(state)s, finished_at = %(at)s, error = %(error)s,
                last_event_id = last_event_id + 1, lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND state = ANY(%(allowed)s)
  AND (%(attempt)s::integer IS NULL OR (attempt = %(attempt)s AND CASE
       WHEN %(expired)s THEN lease_expires_at < extract(epoch FROM clock_timestamp())
       ELSE lease_owner = %(node)s AND lease_expires_at >= extract(epoch FROM clock_timestamp())
       END))
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: record_cancelled
UPDATE jobs SET state = %(state)s, finished_at = %(at)s, error = %(error)s,
                last_event_id = last_event_id + 1, lease_owner = NULL, lease_expires_at = NULL
WHERE id = %(id)s AND state = ANY(%(allowed)s)
  AND (%(attempt)s::integer IS NULL OR (attempt = %(attempt)s AND CASE
       WHEN %(expired)s THEN lease_expires_at < extract(epoch FROM clock_timestamp())
       ELSE lease_owner = %(node)s AND lease_expires_at >= extract(epoch FROM clock_timestamp())
       END))
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: insert_tags
INSERT INTO job_tags (tag, job_id) SELECT unnest(%(tags)s::text[]), %(id)s;

-- name: reserve_candidates
-- A reservation is a lease on a queued job: SKIP LOCKED, so nodes reserving at once take
-- different jobs and none waits for another; a node that dies leaves reservations that
-- simply run out. These are the candidates of the types without a concurrency limit.
SELECT id, priority FROM jobs
WHERE state = 'queued' AND not_before <= %(now)s AND type <> ALL(%(limited)s)
  AND (lease_owner IS NULL OR lease_expires_at < extract(epoch FROM clock_timestamp()))
ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED;

-- name: lock_type
-- Held to the end of the claim transaction: nodes count and claim one limited type's
-- slots one at a time, so together they never exceed its limit.
SELECT pg_advisory_xact_lock(727274002, hashtext(%(type)s));

-- name: reserve_candidates_of_type
SELECT id, priority FROM jobs
WHERE type = %(type)s AND state = 'queued' AND not_before <= %(now)s
  AND (lease_owner IS NULL OR lease_expires_at < extract(epoch FROM clock_timestamp()))
ORDER BY priority DESC, id LIMIT %(limit)s FOR UPDATE SKIP LOCKED;

-- name: busy_of_types
-- Per limited type, its jobs that hold a slot: running, or reserved by a live lease.
SELECT type, count(*) FROM jobs
WHERE type = ANY(%(types)s)
  AND (state = 'processing'
       OR (state = 'queued' AND lease_owner IS NOT NULL
           AND lease_expires_at >= extract(epoch FROM clock_timestamp())))
GROUP BY type;

-- name: reserve
UPDATE jobs SET lease_owner = %(node)s,
                lease_expires_at = extract(epoch FROM clock_timestamp()) + %(lease)s
WHERE id = ANY(%(ids)s) AND state = 'queued'
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: start
UPDATE jobs SET state = 'processing', attempt = attempt + 1,
                started_at = coalesce(started_at, %(now)s), progress = 0, message = NULL,
                last_event_id = last_event_id + 1,
                lease_expires_at = extract(epoch FROM clock_timestamp()) + %(lease)s
WHERE id = %(id)s AND state = 'queued' AND lease_owner = %(node)s
  AND lease_expires_at >= extract(epoch FROM clock_timestamp())
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: release
UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL
WHERE id = ANY(%(ids)s) AND state = 'queued' AND lease_owner = %(node)s;

-- name: progress
UPDATE jobs SET progress = %(progress)s, message = %(message)s,
                last_event_id = last_event_id + %(count)s
WHERE id = %(id)s AND state = 'processing' AND attempt = %(attempt)s
  AND lease_owner = %(node)s AND lease_expires_at >= extract(epoch FROM clock_timestamp())
RETURNING last_event_id, principal;

-- name: request_cancel
UPDATE jobs SET cancel_requested = true WHERE id = %(id)s AND state = 'processing'
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: notify_cancel
SELECT pg_notify('sse_jobs_cancels', %(id)s);

-- name: renew_leases
UPDATE jobs SET lease_expires_at = extract(epoch FROM clock_timestamp()) + %(lease)s
WHERE id = ANY(%(ids)s) AND state IN ('queued', 'processing') AND lease_owner = %(node)s
  AND lease_expires_at >= extract(epoch FROM clock_timestamp())
RETURNING id, cancel_requested;

-- name: expired_attempts
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs
WHERE state = 'processing' AND lease_expires_at < extract(epoch FROM clock_timestamp())
ORDER BY lease_expires_at LIMIT %(limit)s;

-- name: job_counts
SELECT type, state, count(*) FROM jobs GROUP BY type, state;

-- name: principal_job_counts
SELECT type, state, count(*) FROM jobs WHERE principal = %(principal)s GROUP BY type, state;

-- name: next_run_at
-- Of the types that have a free slot (%(full)s: those that have none).
SELECT min(not_before) FROM jobs
WHERE state = 'queued' AND type <> ALL(%(full)s)
  AND (lease_owner IS NULL OR lease_expires_at < extract(epoch FROM clock_timestamp()));

-- name: count_active
SELECT count(*) FROM jobs WHERE principal = %(principal)s AND state = ANY(%(states)s);

-- name: jobs_in_state
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs WHERE state = %(state)s ORDER BY id;

-- name: list_jobs
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs
WHERE (%(principal)s::text IS NULL OR principal = %(principal)s)
  AND (%(any_state)s OR state = ANY(%(states)s))
  AND (%(any_type)s OR type = ANY(%(types)s))
  AND (%(before)s::text IS NULL OR id < %(before)s)
  AND (%(any_tag)s OR id IN (SELECT job_id FROM job_tags WHERE tag = ANY(%(tags)s)
                             GROUP BY job_id HAVING count(*) = %(tag_count)s))
ORDER BY id DESC LIMIT %(limit)s;

-- name: job_events
SELECT e.id, e.job_id, e.seq, e.event, e.data, j.principal
FROM events e JOIN jobs j ON j.id = e.job_id
WHERE e.job_id = %(id)s AND e.seq > %(after)s ORDER BY e.seq LIMIT %(limit)s;

-- name: all_events
SELECT e.id, e.job_id, e.seq, e.event, e.data, j.principal
FROM events e JOIN jobs j ON j.id = e.job_id
WHERE e.id > %(after)s AND (%(principal)s::text IS NULL OR j.principal = %(principal)s)
ORDER BY e.id LIMIT %(limit)s;

-- name: last_event_id
SELECT last_id FROM event_counter;

-- name: select_secret
SELECT value FROM secrets WHERE name = %(name)s;

-- name: insert_secret
INSERT INTO secrets (name, value) VALUES (%(name)s, %(value)s) ON CONFLICT (name) DO NOTHING;

-- name: delete_job
DELETE FROM jobs WHERE id = %(id)s AND state = ANY(%(states)s) RETURNING id;

-- name: delete_events
DELETE FROM events WHERE job_id = %(id)s;

-- name: delete_attempts
DELETE FROM delivery_attempts
WHERE delivery_id IN (SELECT id FROM deliveries WHERE job_id = %(id)s);

-- name: delete_deliveries
DELETE FROM deliveries WHERE job_id = %(id)s;

-- name: delete_tags
DELETE FROM job_tags WHERE job_id = %(id)s;

-- name: insert_delivery
INSERT INTO deliveries (job_id, seq, event, url, state, next_attempt_at, created_at)
VALUES (%(job_id)s, %(seq)s, %(event)s, %(url)s, 'pending', %(now)s, %(now)s);

-- name: claim_deliveries
-- Due deliveries, held until %(until)s; SKIP LOCKED: each is posted by one node.
UPDATE deliveries SET next_attempt_at = %(until)s
WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at <= %(now)s
             ORDER BY next_attempt_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED)
RETURNING id, job_id, seq, event, url, state, attempts, next_attempt_at, created_at;

-- name: release_deliveries
UPDATE deliveries SET next_attempt_at = %(now)s
WHERE state = 'pending' AND id = ANY(%(ids)s);

-- name: next_delivery_at
SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending';

-- name: job_deliveries
SELECT id, job_id, seq, event, url, state, attempts, next_attempt_at, created_at
FROM deliveries WHERE job_id = %(id)s ORDER BY id;

-- name: job_delivery_attempts
SELECT a.delivery_id, a.number, a.at, a.status, a.error, a.duration
FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.job_id = %(id)s ORDER BY a.delivery_id, a.number;

-- name: insert_attempt
INSERT INTO delivery_attempts (delivery_id, number, at, status, error, duration)
VALUES (%(id)s, %(number)s, %(at)s, %(status)s, %(error)s, %(duration)s);

-- name: update_delivery
UPDATE deliveries SET state = %(state)s, attempts = %(number)s,
                      next_attempt_at = %(next_attempt_at)s
WHERE id = %(id)s;

-- name: retry_delivery
UPDATE deliveries SET state = 'pending', next_attempt_at = %(now)s
WHERE id = %(id)s AND job_id = %(job_id)s AND state = 'dead'
RETURNING id, job_id, seq, event, url, state, attempts, next_attempt_at, created_at;

-- name: finished_before
SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < %(cutoff)s
ORDER BY finished_at LIMIT %(limit)s;

-- name: ensure_rate_limit
INSERT INTO rate_limits (key, level, at)
VALUES (%(key)s, %(burst)s, extract(epoch FROM clock_timestamp()))
ON CONFLICT (key) DO NOTHING;

-- name: lock_rate_limit
SELECT level, at, extract(epoch FROM clock_timestamp()) FROM rate_limits
WHERE key = %(key)s FOR UPDATE;

-- name: update_rate_limit
UPDATE rate_limits SET level = %(level)s, at = %(at)s WHERE key = %(key)s;

-- name: hold_task
-- The task's hold is ours if nobody has it, it is ours already, or another's has run out.
INSERT INTO task_holds (task, holder, until)
VALUES (%(task)s, %(node)s, extract(epoch FROM clock_timestamp()) + %(seconds)s)
ON CONFLICT (task) DO UPDATE SET holder = EXCLUDED.holder, until = EXCLUDED.until
WHERE task_holds.holder = EXCLUDED.holder
   OR task_holds.until < extract(epoch FROM clock_timestamp())
RETURNING holder;

-- name: ping
SELECT 1;

-- name: read_only
-- Whether this server refuses writes: a standby in recovery, or read-only by setting.
SELECT pg_is_in_recovery() OR current_setting('transaction_read_only')::boolean;
