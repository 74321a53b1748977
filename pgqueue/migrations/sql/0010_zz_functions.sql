-- Revision 0010: a job cannot take the id of a finished one. Finished jobs keep their ids in
-- pgqueue.finished_jobs, which active_jobs' primary key does not see, so an insert could reuse
-- one: with an explicit id (the producer role may set it, for enqueue_many's COPY), or with an
-- identity sequence set back (a restore, a logical replica promoted, RESTART IDENTITY). The job
-- then ran, and its ack, finding its id in the history, kept the old row there and dropped the
-- new outcome: the job vanished, and app.wait() on its id returned the old job's result. The
-- statement's insert trigger now fails it, with unique_violation naming the id, when a row it
-- inserted has the id of a finished job. It looks the ids up in finished_jobs' primary key,
-- as the table's owner (SECURITY DEFINER), since the producer role cannot read finished_jobs.
CREATE OR REPLACE FUNCTION pgqueue.notify_jobs_inserted() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    q text;
    taken bigint;
BEGIN
    -- = ANY(ARRAY(...)): probes the primary key per id; a join may scan the whole history.
    -- Only ids up to the history's greatest are probed: those from the sequence are past it,
    -- so an enqueue's check costs one probe of the key, not one per job (100,000 jobs
    -- beside a history of 1,000,000: an eighth of the INSERT's time).
    SELECT f.id INTO taken FROM pgqueue.finished_jobs AS f
     WHERE f.id = ANY(ARRAY(SELECT n.id FROM new_rows AS n
                             WHERE n.id <= (SELECT max(h.id) FROM pgqueue.finished_jobs AS h)))
     LIMIT 1;
    IF taken IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'unique_violation',
            MESSAGE = 'pgqueue: job id ' || taken || ' is the id of a finished job',
            DETAIL = 'Job ids come from the identity sequence of pgqueue.active_jobs; do not set'
                || ' them. If the sequence was set back (a restore, a promoted replica), set it'
                || ' past every job''s id.',
            HINT = 'SELECT setval(pg_get_serial_sequence(''pgqueue.active_jobs'', ''id''),'
                || ' (SELECT max(id) FROM pgqueue.jobs));';
    END IF;
    FOR q IN SELECT DISTINCT n.queue FROM new_rows n WHERE n.state = 'queued' AND n.run_at <= now() LOOP
        PERFORM pg_notify('pgqueue_jobs', q);
    END LOOP;
    RETURN NULL;
END;
$$;

-- Revision 0010: pgqueue.retry moves the job back and deletes its history row in one
-- statement, so that the insert trigger above, which runs at the statement's end, finds the id
-- gone from the history. Everything else is as revision 0008 wrote it: the history row is
-- locked first, the job goes in with ON CONFLICT DO NOTHING, and the history row is deleted
-- only if it did.
CREATE OR REPLACE FUNCTION pgqueue.retry(job_id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    back bigint;
BEGIN
    WITH picked AS (
        SELECT f.* FROM pgqueue.finished_jobs AS f
         WHERE f.id = job_id AND f.state IN ('failed', 'cancelled')
           FOR UPDATE
    ), usable AS (
        SELECT p.*,
               p.timeout IS NULL OR (p.timeout > 0 AND p.timeout < 'Infinity') AS timeout_ok,
               p.created_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                AND timestamptz '9999-12-31 00:00+00' AS created_ok
          FROM picked AS p
    ), moved AS (
        INSERT INTO pgqueue.active_jobs AS j
            (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at,
             created_at, timeout, unique_key, last_error, errors, meta)
        SELECT u.id, u.queue, u.task, u.args, u.kwargs, 'queued', u.priority, u.attempts,
               least(u.attempts::bigint + u.max_attempts, 1000)::integer, now(),
               CASE WHEN u.created_ok THEN u.created_at ELSE now() END,
               CASE WHEN u.timeout_ok THEN u.timeout END,
               u.unique_key, u.last_error, u.errors,
               CASE WHEN jsonb_typeof(u.meta) = 'object' THEN u.meta
                    ELSE jsonb_build_object('meta_was', u.meta) END
               || CASE WHEN u.timeout_ok THEN '{}'
                       ELSE jsonb_build_object('timeout_was', u.timeout::text) END
               || CASE WHEN u.created_ok THEN '{}'
                       ELSE jsonb_build_object('created_at_was', u.created_at::text) END
          FROM usable AS u
        ON CONFLICT DO NOTHING
        RETURNING j.id
    )
    DELETE FROM pgqueue.finished_jobs AS f USING moved AS m WHERE f.id = m.id
    RETURNING f.id INTO back;
    RETURN back IS NOT NULL;
END;
$$;
