-- Least-privilege roles for pgqueue. NOT run by `pgqueue migrate`: the owner of schema
-- pgqueue (the "migrator") runs it once per database, after migrating:
--     psql "$DATABASE_URL" -f roles.sql
-- Creating the two roles, when they do not exist, takes CREATEROLE: a migrator without it
-- has a DBA run the CREATE ROLEs below once per server first (docs/how-to/security.md).
-- It creates two group roles (NOLOGIN) and grants them what they need; give them to your login
-- roles with:  GRANT pgqueue_worker TO my_worker_login;  GRANT pgqueue_producer TO my_web_login;
-- Re-running it is harmless. Tables added by later migrations are covered by re-running it.
--
--   migrator  owns schema pgqueue and runs `pgqueue migrate` (DDL). Your existing owner role.
--   worker    reads and writes job rows, its own registry row, periodic ticks and (0009 on)
--             the schedules' pruning watermarks, calls pgqueue.enqueue(), cancel() and
--             retry(); cannot change the schema or the schema version.
--   producer  enqueues only: INSERT into active_jobs, of the columns an enqueue sets
--             (reading back the id, and the unique_key a unique job is looked up by), ids
--             from its identity sequence (enqueue_many loads big batches with COPY and ids
--             taken first), calls pgqueue.enqueue(), reads the pgqueue.jobs view and the
--             schema's revision; cannot claim, ack, cancel or delete anything, nor insert
--             a job past queued.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgqueue_worker') THEN
        CREATE ROLE pgqueue_worker NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgqueue_producer') THEN
        CREATE ROLE pgqueue_producer NOLOGIN;
    END IF;
END
$$;

GRANT USAGE ON SCHEMA pgqueue TO pgqueue_worker, pgqueue_producer;

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgqueue TO pgqueue_worker;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA pgqueue TO pgqueue_worker;
REVOKE INSERT, UPDATE, DELETE ON pgqueue.alembic_version FROM pgqueue_worker;

-- The columns an enqueue sets, not a job's progress (state, attempts, lease, worker, errors):
-- with every column, a job inserted running under no worker, leased to 9999, was never
-- rescued. The REVOKE takes back the table-wide INSERT earlier versions of this script gave
-- (and the column grants with it); both in one statement, so that re-running the script, as
-- psql does one statement at a time, never leaves the producer's enqueues denied between.
DO $$
BEGIN
    REVOKE INSERT ON pgqueue.active_jobs FROM pgqueue_producer;
    GRANT INSERT (id, queue, task, args, kwargs, priority, max_attempts, run_at, timeout,
                  unique_key, meta) ON pgqueue.active_jobs TO pgqueue_producer;
END
$$;
GRANT SELECT (id, unique_key) ON pgqueue.active_jobs TO pgqueue_producer;
-- The SQL functions: PUBLIC may call them by default; this keeps the roles' calls working
-- where that was revoked. Enqueueing is both roles'; cancel and retry are the worker's.
-- Named with their argument lists: a bare name fails ("function name is not unique") once
-- the schema holds an overload of it, a user's or a later revision's.
GRANT EXECUTE ON FUNCTION
    pgqueue.enqueue(text, jsonb, jsonb, text, integer, timestamptz, integer, text,
                    double precision, jsonb)
    TO pgqueue_worker, pgqueue_producer;
GRANT EXECUTE ON FUNCTION pgqueue.cancel(bigint), pgqueue.retry(bigint) TO pgqueue_worker;
-- Which code the schema serves (revision 0007 on): read by a worker that finds the schema
-- newer than itself; the same, for a function older schemas do not have.
DO $$
BEGIN
    IF to_regprocedure('pgqueue.compatible_since()') IS NOT NULL THEN
        GRANT EXECUTE ON FUNCTION pgqueue.compatible_since() TO pgqueue_worker, pgqueue_producer;
    END IF;
END
$$;
DO $$
BEGIN
    EXECUTE 'GRANT USAGE ON SEQUENCE '
        || pg_get_serial_sequence('pgqueue.active_jobs', 'id') || ' TO pgqueue_producer';
END
$$;
GRANT SELECT ON pgqueue.jobs TO pgqueue_producer;
-- The schema's revision, read by pgqueue.schema_check() and `pgqueue migrate --check` or
-- `pgqueue healthcheck` (a web application's readiness gate), which failed on "permission
-- denied for table alembic_version" under the producer.
GRANT SELECT ON pgqueue.alembic_version TO pgqueue_producer;
