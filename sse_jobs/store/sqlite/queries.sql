-- Every statement of the SQLite store. Values are bound parameters; a list travels as one
-- JSON array parameter and is unpacked with json_each. Rows of the jobs table are always
-- returned with the columns of select_job, in that order.

-- name: select_job
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs WHERE id = ?;

-- name: select_job_by_key
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs WHERE principal = ? AND idempotency_key = ?;

-- name: select_state
SELECT state FROM jobs WHERE id = ?;

-- name: insert_job
INSERT INTO jobs (id, type, state, params, priority, max_attempts, timeout, created_at,
                  not_before, last_event_id, idempotency_key, request_hash, principal,
                  callback_url, callback_events, rerun_of, run_at, tags)
VALUES (:id, :type, 'queued', :params, :priority, :max_attempts, :timeout, :created_at,
        max(:created_at, coalesce(:run_at, :created_at)), 1, :idempotency_key,
        :request_hash, :principal, :callback_url, :callback_events, :rerun_of, :run_at,
        :tags)
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: queue_depth
-- Queued jobs in all, and those that run before a job of this priority and id.
SELECT count(*),
       count(*) FILTER (WHERE priority > :priority OR (priority = :priority AND id < :id))
FROM jobs WHERE state = 'queued';

-- name: insert_event
INSERT INTO events (id, job_id, seq, event, data) VALUES (?, ?, ?, ?, ?);

-- name: next_event_id
SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0);

-- name: record_retrying
-- Each state-changing event is one UPDATE that bumps last_event_id, which becomes the new
-- event's seq, guarded by the states the event may be recorded in (and, for an attempt's
-- outcome, by its attempt: the fence); it returns the row.
UPDATE jobs SET state = :state, not_before = :not_before, error = :error,
                attempt = attempt - :refund, last_event_id = last_event_id + 1
WHERE id = :id AND state IN (SELECT value FROM json_each(:allowed))
  AND (:attempt IS NULL OR attempt = :attempt)
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: record_completed
UPDATE jobs SET state = :state, finished_at = :at, result = :result,
                result_file = :result_file, progress = 100, error = NULL,
                last_event_id = last_event_id + 1
WHERE id = :id AND state IN (SELECT value FROM json_each(:allowed))
  AND (:attempt IS NULL OR attempt = :attempt)
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: record_failed
UPDATE jobs SET state = :state, finished_at = :at, error = :error,
                last_event_id = last_event_id + 1
WHERE id = :id AND state IN (SELECT value FROM json_each(:allowed))
  AND (:attempt IS NULL OR attempt = :attempt)
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: record_cancelled
UPDATE jobs SET state = :state, finished_at = :at, error = :error,
                last_event_id = last_event_id + 1
WHERE id = :id AND state IN (SELECT value FROM json_each(:allowed))
  AND (:attempt IS NULL OR attempt = :attempt)
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: insert_tags
INSERT INTO job_tags (tag, job_id) SELECT value, :id FROM json_each(:tags);

-- name: reserve_candidates
-- Due queued jobs nobody has reserved, of the types without a concurrency limit.
SELECT id, priority FROM jobs
WHERE state = 'queued' AND reserved = 0 AND not_before <= :now
  AND type NOT IN (SELECT value FROM json_each(:limited))
ORDER BY priority DESC, id LIMIT :limit;

-- name: reserve_candidates_of_type
SELECT id, priority FROM jobs
WHERE type = :type AND state = 'queued' AND reserved = 0 AND not_before <= :now
ORDER BY priority DESC, id LIMIT :limit;

-- name: busy_of_types
-- Per limited type, its jobs that hold a slot: running, or reserved to run next.
SELECT type, count(*) FROM jobs
WHERE type IN (SELECT value FROM json_each(:types))
  AND (state = 'processing' OR (state = 'queued' AND reserved = 1))
GROUP BY type;

-- name: reserve
UPDATE jobs SET reserved = 1
WHERE state = 'queued' AND reserved = 0 AND id IN (SELECT value FROM json_each(:ids))
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: start
UPDATE jobs SET state = 'processing', attempt = attempt + 1, reserved = 0,
                started_at = coalesce(started_at, :now), progress = 0, message = NULL,
                last_event_id = last_event_id + 1
WHERE id = :id AND state = 'queued' AND reserved = 1
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: release
UPDATE jobs SET reserved = 0
WHERE reserved = 1 AND id IN (SELECT value FROM json_each(:ids));

-- name: release_all
-- At start: whatever a previous server reserved, it will never start.
UPDATE jobs SET reserved = 0 WHERE reserved = 1;

-- name: progress
UPDATE jobs SET progress = :progress, message = :message,
                last_event_id = last_event_id + :count
WHERE id = :id AND state = 'processing' AND attempt = :attempt
RETURNING last_event_id, principal;

-- name: request_cancel
UPDATE jobs SET cancel_requested = 1 WHERE id = ? AND state = 'processing'
RETURNING id, type, state, params, priority, attempt, max_attempts, timeout, progress,
          message, created_at, started_at, finished_at, not_before, result, result_file,
          error, last_event_id, cancel_requested, idempotency_key, request_hash, principal,
          callback_url, callback_events, rerun_of, run_at, tags;

-- name: processing_of
SELECT id, cancel_requested FROM jobs
WHERE state = 'processing' AND id IN (SELECT value FROM json_each(:ids));

-- name: job_counts
SELECT type, state, count(*) FROM jobs GROUP BY type, state;

-- name: principal_job_counts
SELECT type, state, count(*) FROM jobs WHERE principal = ? GROUP BY type, state;

-- name: next_run_at
-- Of the types that have a free slot (:full: those that have none).
SELECT min(not_before) FROM jobs
WHERE state = 'queued' AND reserved = 0 AND type NOT IN (SELECT value FROM json_each(:full));

-- name: count_active
SELECT count(*) FROM jobs
WHERE principal = :principal AND state IN (SELECT value FROM json_each(:states));

-- name: jobs_in_state
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs WHERE state = ? ORDER BY id;

-- name: list_jobs
SELECT id, type, state, params, priority, attempt, max_attempts, timeout, progress, message,
       created_at, started_at, finished_at, not_before, result, result_file, error,
       last_event_id, cancel_requested, idempotency_key, request_hash, principal,
       callback_url, callback_events, rerun_of, run_at, tags
FROM jobs
WHERE (:principal IS NULL OR principal = :principal)
  AND (:any_state OR state IN (SELECT value FROM json_each(:states)))
  AND (:any_type OR type IN (SELECT value FROM json_each(:types)))
  AND (:before IS NULL OR id < :before)
  AND (:any_tag OR id IN (SELECT job_id FROM job_tags
                          WHERE tag IN (SELECT value FROM json_each(:tags))
                          GROUP BY job_id HAVING count(*) = :tag_count))
ORDER BY id DESC LIMIT :limit;

-- name: job_events
SELECT e.id, e.job_id, e.seq, e.event, e.data, j.principal
FROM events e JOIN jobs j ON j.id = e.job_id
WHERE e.job_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?;

-- name: all_events
SELECT e.id, e.job_id, e.seq, e.event, e.data, j.principal
FROM events e JOIN jobs j ON j.id = e.job_id
WHERE e.id > :after AND (:principal IS NULL OR j.principal = :principal)
ORDER BY e.id LIMIT :limit;

-- name: last_event_id
-- The highest id ever assigned (AUTOINCREMENT keeps it when the newest events are deleted),
-- not max(id) of the events left: a client that saw a deleted job's events is still current.
SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0);

-- name: select_secret
SELECT value FROM secrets WHERE name = ?;

-- name: insert_secret
INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING;

-- name: delete_job
DELETE FROM jobs WHERE id = :id AND state IN (SELECT value FROM json_each(:states))
RETURNING id;

-- name: delete_events
DELETE FROM events WHERE job_id = ?;

-- name: delete_attempts
DELETE FROM delivery_attempts
WHERE delivery_id IN (SELECT id FROM deliveries WHERE job_id = ?);

-- name: delete_deliveries
DELETE FROM deliveries WHERE job_id = ?;

-- name: delete_tags
DELETE FROM job_tags WHERE job_id = ?;

-- name: insert_delivery
INSERT INTO deliveries (job_id, seq, event, url, state, next_attempt_at, created_at)
VALUES (?, ?, ?, ?, 'pending', ?, ?);

-- name: claim_deliveries
-- Due deliveries, held until :until (the sender posts them meanwhile).
UPDATE deliveries SET next_attempt_at = :until
WHERE id IN (SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at <= :now
             ORDER BY next_attempt_at LIMIT :limit)
RETURNING id, job_id, seq, event, url, state, attempts, next_attempt_at, created_at;

-- name: release_deliveries
UPDATE deliveries SET next_attempt_at = :now
WHERE state = 'pending' AND id IN (SELECT value FROM json_each(:ids));

-- name: next_delivery_at
SELECT min(next_attempt_at) FROM deliveries WHERE state = 'pending';

-- name: job_deliveries
SELECT id, job_id, seq, event, url, state, attempts, next_attempt_at, created_at
FROM deliveries WHERE job_id = ? ORDER BY id;

-- name: job_delivery_attempts
SELECT a.delivery_id, a.number, a.at, a.status, a.error, a.duration
FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id
WHERE d.job_id = ? ORDER BY a.delivery_id, a.number;

-- name: insert_attempt
INSERT INTO delivery_attempts (delivery_id, number, at, status, error, duration)
VALUES (:id, :number, :at, :status, :error, :duration);

-- name: update_delivery
UPDATE deliveries SET state = :state, attempts = :number, next_attempt_at = :next_attempt_at
WHERE id = :id;

-- name: retry_delivery
UPDATE deliveries SET state = 'pending', next_attempt_at = :now
WHERE id = :id AND job_id = :job_id AND state = 'dead'
RETURNING id, job_id, seq, event, url, state, attempts, next_attempt_at, created_at;

-- name: finished_before
SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?
ORDER BY finished_at LIMIT ?;

-- name: ping
SELECT 1;

-- name: pragma_journal_mode
PRAGMA journal_mode = WAL;

-- name: pragma_synchronous
-- FULL: a commit is on disk before the 202 or the event goes out, even across power loss.
PRAGMA synchronous = FULL;

-- name: pragma_temp_store
PRAGMA temp_store = MEMORY;

-- name: pragma_query_only
PRAGMA query_only = ON;

-- name: user_version
PRAGMA user_version;
