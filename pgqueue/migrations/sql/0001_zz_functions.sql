-- The SQL contract for steering jobs from any language, trigger or psql. Each function runs in
-- the caller's transaction and notifies like the Python API does: the statement trigger on
-- active_jobs wakes workers for new runnable rows, the one on finished_jobs wakes waiters.

-- Enqueue a job; returns its id. With a unique_key already held by an active job, nothing is
-- inserted and the id of that job is returned.
CREATE FUNCTION pgqueue.enqueue(
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

-- Put a failed or cancelled job back in its queue, runnable now, with a fresh budget of
-- max_attempts attempts. Attempt numbers continue, so its error history stays unambiguous.
-- Returns false when there is no failed or cancelled job with that id, or when its unique_key
-- is held by another active job (retrying it would make a duplicate).
CREATE FUNCTION pgqueue.retry(job_id bigint) RETURNS boolean
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
           least(g.attempts + g.max_attempts, 1000), now(), g.created_at, g.timeout,
           g.unique_key, g.last_error, g.errors, g.meta
      FROM gone AS g;
    RETURN FOUND;
END;
$$;

-- Cancel a job. A queued job is cancelled at once; a running one is flagged, and the worker
-- running it stops it: it reads the flag with its heartbeat, and the notification on
-- pgqueue_cancel (payload: that worker's id) only hastens the heartbeat. Returns 'cancelled',
-- 'requested', 'already <state>' for a job that had already finished (e.g. 'already
-- succeeded'), or NULL when there is no such job. The row lock makes a concurrent claim or
-- ack finish first, so the state read here is the one that counts.
CREATE FUNCTION pgqueue.cancel(job_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    current text;
    worker text;
BEGIN
    SELECT a.state INTO current FROM pgqueue.active_jobs AS a WHERE a.id = job_id FOR UPDATE;
    IF current = 'queued' THEN
        WITH gone AS (
            DELETE FROM pgqueue.active_jobs AS a WHERE a.id = job_id RETURNING a.*
        )
        INSERT INTO pgqueue.finished_jobs
            (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at,
             created_at, started_at, finished_at, worker_id, timeout, unique_key, result,
             last_error, errors, meta)
        SELECT g.id, g.queue, g.task, g.args, g.kwargs, 'cancelled', g.priority, g.attempts,
               g.max_attempts, g.run_at, g.created_at, g.started_at, now(), g.worker_id,
               g.timeout, g.unique_key, NULL, 'cancelled on request', g.errors, g.meta
          FROM gone AS g;
        RETURN 'cancelled';
    ELSIF current = 'running' THEN
        UPDATE pgqueue.active_jobs AS a SET cancel_requested = true WHERE a.id = job_id
        RETURNING a.worker_id INTO worker;
        IF worker IS NOT NULL THEN
            PERFORM pg_notify('pgqueue_cancel', worker);
        END IF;
        RETURN 'requested';
    END IF;
    SELECT 'already ' || f.state INTO current FROM pgqueue.finished_jobs AS f WHERE f.id = job_id;
    RETURN current;
END;
$$;

-- Wake whoever waits for jobs to finish: one notification per statement (per 400 ids, to stay
-- under NOTIFY's 8000-byte payload limit), never one per row. The payload lists the ids; a
-- waiter re-reads its row, so a lost or forged notification costs nothing but a poll.
CREATE FUNCTION pgqueue.notify_jobs_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    FOR payload IN
        SELECT string_agg(c.id::text, ',')
          FROM (SELECT n.id, (row_number() OVER ()) / 400 AS chunk FROM new_rows AS n) AS c
         GROUP BY c.chunk
    LOOP
        PERFORM pg_notify('pgqueue_finished', payload);
    END LOOP;
    RETURN NULL;
END;
$$;

CREATE TRIGGER finished_jobs_notify_insert
    AFTER INSERT ON pgqueue.finished_jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.notify_jobs_finished();
