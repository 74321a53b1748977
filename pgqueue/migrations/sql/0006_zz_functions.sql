-- Revision 0006: pgqueue.enqueue names an out-of-range priority. The column is a smallint and
-- the parameter an integer, so priority => 40000 failed with "smallint out of range", naming
-- neither the parameter nor its bounds. The SQLSTATE is the same as before (22003), so code
-- that caught it still does. Everything else is as revision 0001 wrote it.
CREATE OR REPLACE FUNCTION pgqueue.enqueue(
    task         text,
    args         jsonb            DEFAULT '[]',
    kwargs       jsonb            DEFAULT '{}',
    queue        text             DEFAULT 'default',
    priority     integer          DEFAULT 0,
    run_at       timestamptz      DEFAULT NULL,
    max_attempts integer          DEFAULT 3,
    unique_key   text             DEFAULT NULL,
    timeout      double precision DEFAULT NULL,
    meta         jsonb            DEFAULT '{}'
) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    -- The parameter is an integer and the column a smallint: name the parameter, not the type.
    IF enqueue.priority NOT BETWEEN -32768 AND 32767 THEN
        RAISE EXCEPTION USING ERRCODE = 'numeric_value_out_of_range',
            MESSAGE = 'pgqueue.enqueue: priority ' || enqueue.priority
                || ' is out of range: use -32768..32767';
    END IF;
    INSERT INTO pgqueue.active_jobs AS j
        (task, args, kwargs, queue, priority, run_at, max_attempts, unique_key, timeout, meta)
    VALUES (enqueue.task, enqueue.args, enqueue.kwargs, enqueue.queue, enqueue.priority,
            coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.unique_key,
            enqueue.timeout, enqueue.meta)
    ON CONFLICT DO NOTHING
    RETURNING j.id INTO new_id;
    IF new_id IS NULL THEN
        SELECT a.id INTO new_id FROM pgqueue.active_jobs AS a WHERE a.unique_key = enqueue.unique_key;
    END IF;
    RETURN new_id;
END;
$$;

-- Revision 0006: pgqueue.retry adds a job's attempts and max_attempts as bigints. A failed job
-- whose attempts SQL had set near the largest integer made the sum overflow, and since
-- `pgqueue jobs retry --failed` and admin.retry_failed call this function over every failed
-- job in one statement, that one row failed them all. Everything else is as revision 0001
-- wrote it.
CREATE OR REPLACE FUNCTION pgqueue.retry(job_id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        DELETE FROM pgqueue.finished_jobs AS f
         WHERE f.id = job_id AND f.state IN ('failed', 'cancelled')
           AND NOT EXISTS (SELECT 1 FROM pgqueue.active_jobs AS a WHERE a.unique_key = f.unique_key)
        RETURNING f.*
    )
    INSERT INTO pgqueue.active_jobs
        (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at,
         created_at, timeout, unique_key, last_error, errors, meta)
    SELECT g.id, g.queue, g.task, g.args, g.kwargs, 'queued', g.priority, g.attempts,
           least(g.attempts::bigint + g.max_attempts, 1000)::integer, now(), g.created_at, g.timeout,
           g.unique_key, g.last_error, g.errors, g.meta
      FROM gone AS g;
    RETURN FOUND;
END;
$$;
