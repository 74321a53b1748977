-- Revision 0007: which code this schema serves. A worker checks the schema's revision at
-- start. Before 0007 it refused any revision but its own, so during a rolling deploy a worker
-- still on the old code that restarted after the migration (a crash, a scale-up) could not
-- start, though nothing it does had changed. pgqueue.compatible_since() names the oldest
-- revision code may need and still run on this schema: code that finds the schema newer than
-- itself starts when the revision it needs is not older than that, and refuses otherwise.
-- A later revision that keeps older code working leaves the function as it is; one that
-- breaks older code replaces it with its own revision. Code before 0007 does not read it.
CREATE FUNCTION pgqueue.compatible_since() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0007'::text $$;

-- Revision 0007: pgqueue.retry takes any row of the history back. The history gains no check
-- (0006 and 0007 repair it instead, see 0007_jobs.sql), so a row written there by hand, or an
-- odd job acknowledged while 0006 or 0007 ran, may hold a meta that is not an object, a NaN,
-- infinite or non-positive timeout, or a created_at outside 0001-01-02 .. 9999-12-31 00:00 UTC,
-- all of which active_jobs refuses. `pgqueue jobs retry --failed` and admin.retry_failed call
-- this function over every failed job in one statement, so that one row failed them all. Such
-- values are now written as the upgrades repair them: meta becomes {"meta_was": <it>}, the
-- timeout NULL and created_at now(), the old ones in meta->>'timeout_was' and
-- meta->>'created_at_was'. Everything else is as revision 0006 wrote it.
CREATE OR REPLACE FUNCTION pgqueue.retry(job_id bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    WITH gone AS (
        DELETE FROM pgqueue.finished_jobs AS f
         WHERE f.id = job_id AND f.state IN ('failed', 'cancelled')
           AND NOT EXISTS (SELECT 1 FROM pgqueue.active_jobs AS a WHERE a.unique_key = f.unique_key)
        RETURNING f.*
    ), usable AS (
        SELECT g.*,
               g.timeout IS NULL OR (g.timeout > 0 AND g.timeout < 'Infinity') AS timeout_ok,
               g.created_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                AND timestamptz '9999-12-31 00:00+00' AS created_ok
          FROM gone AS g
    )
    INSERT INTO pgqueue.active_jobs
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
      FROM usable AS u;
    RETURN FOUND;
END;
$$;
