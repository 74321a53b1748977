-- Revision 0008: pgqueue.retry returns false, instead of failing, when an enqueue still in
-- progress takes the job's unique_key. It checked the key with NOT EXISTS and then inserted
-- without ON CONFLICT: the insert waited for that enqueue and, when it committed, raised
-- unique_violation, which aborted the caller's transaction (and `pgqueue jobs retry --failed`
-- and admin.retry_failed, which retry every failed job in one statement, for all of them).
-- Now the history row is locked first (a concurrent retry of the same job waits, then finds
-- it gone), the job goes in with ON CONFLICT DO NOTHING, and the history row is deleted only
-- if it did: a job is never dropped. Values are repaired as revision 0007 wrote them.
-- Locking the row needs UPDATE on pgqueue.finished_jobs, which pgqueue_worker has.
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
    )
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
    RETURNING j.id INTO back;
    IF back IS NULL THEN
        RETURN false;
    END IF;
    DELETE FROM pgqueue.finished_jobs AS f WHERE f.id = back;
    RETURN true;
END;
$$;

-- Revision 0008: pgqueue.enqueue never returns NULL. After ON CONFLICT DO NOTHING it looks up
-- the job holding the key; when that job finished in between (its worker's ack moved it to
-- the history), the look-up found nothing and the function returned NULL, inserting nothing:
-- the job was lost. It now tries again, as the Python API does (pgqueue/_unique.py), and with
-- the same bound, MAX_ROUNDS = 20: each round ends unless the key changed hands at that very
-- moment, so the bound is reached only while jobs with this key keep being created and
-- finished. Then it raises serialization_failure, which asks for the transaction to be run
-- again. Everything else is as revision 0006 wrote it.
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
    FOR round_no IN 1..20 LOOP
        INSERT INTO pgqueue.active_jobs AS j
            (task, args, kwargs, queue, priority, run_at, max_attempts, unique_key, timeout, meta)
        VALUES (enqueue.task, enqueue.args, enqueue.kwargs, enqueue.queue, enqueue.priority,
                coalesce(enqueue.run_at, now()), enqueue.max_attempts, enqueue.unique_key,
                enqueue.timeout, enqueue.meta)
        ON CONFLICT DO NOTHING
        RETURNING j.id INTO new_id;
        IF new_id IS NULL THEN
            -- A statement of its own: under READ COMMITTED it sees the holder the insert met.
            SELECT a.id INTO new_id FROM pgqueue.active_jobs AS a
             WHERE a.unique_key = enqueue.unique_key;
        END IF;
        IF new_id IS NOT NULL THEN
            RETURN new_id;
        END IF;
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = 'serialization_failure',
        MESSAGE = 'pgqueue.enqueue: unique key ' || quote_nullable(enqueue.unique_key)
            || ' kept changing hands; gave up after 20 tries',
        HINT = 'Run the transaction again.';
END;
$$;

-- Revision 0008: pgqueue.cancel finds a job that pgqueue.retry takes back during the call. It
-- looks for the job among the active ones, then in the history, each look with a snapshot of
-- its own: a retry committing between the two hid the job from both, and cancel returned NULL
-- for a job that exists. app.cancel calls it a second time after a NULL, which covered this;
-- callers from SQL had no such cover. When neither look finds the job it now looks once more
-- itself. Everything else is as revision 0001 wrote it.
CREATE OR REPLACE FUNCTION pgqueue.cancel(job_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    current text;
    worker text;
BEGIN
    FOR round_no IN 1..2 LOOP
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
        SELECT 'already ' || f.state INTO current FROM pgqueue.finished_jobs AS f
         WHERE f.id = job_id;
        IF current IS NOT NULL THEN
            RETURN current;
        END IF;
    END LOOP;
    RETURN NULL;
END;
$$;
