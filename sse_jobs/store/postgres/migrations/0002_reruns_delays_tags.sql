-- Re-runs, delayed jobs and tags. rerun_of: the job this one was made to run again.
-- run_at: the time the submission asked it to start at (null: at once); not_before keeps
-- deciding when it may be reserved. tags: the job's tags as a JSON array, for reading the
-- row whole; job_tags indexes them for the listing filter.
ALTER TABLE jobs ADD COLUMN rerun_of text;
ALTER TABLE jobs ADD COLUMN run_at double precision;
ALTER TABLE jobs ADD COLUMN tags text NOT NULL DEFAULT '[]';
CREATE TABLE job_tags (
    tag    text NOT NULL,
    job_id text NOT NULL,
    PRIMARY KEY (tag, job_id)
);
CREATE INDEX job_tags_job ON job_tags (job_id);
-- Per-type concurrency: the queued jobs of one type in claim order, and the count of a
-- type's reserved or processing jobs.
CREATE INDEX jobs_type_queue ON jobs (type, priority DESC, id) WHERE state = 'queued';
CREATE INDEX jobs_type_state ON jobs (type, state);
