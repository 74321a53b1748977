-- Revision 0007: from SQL too, every timestamp a job keeps is one its readers can load.
-- 0004 to 0006 bounded run_at and a running job's lease; created_at, started_at and a queued
-- job's lease_expires_at took any timestamp an INSERT or UPDATE gave them ('infinity', year
-- 200000), and the job took it to the history. psycopg cannot load those into a datetime, so
-- one such row failed every reader of pgqueue.jobs that loads it: the Django admin's list of
-- jobs, SQLAlchemy or psycopg code of the application's own. (pgqueue's own readers bound
-- what they load since 0006's release, and go on doing so.) The bounds are run_at's (0006):
-- 0001-01-02 .. 9999-12-31 00:00 UTC, what psycopg loads in every time zone; every time
-- pgqueue writes is now(), well inside them.
--
-- A timestamp outside them, in active_jobs or in the history (created_at, started_at,
-- finished_at, and run_at, which 0005 only made finite there), keeps its old value in
-- meta->>'<column>_was' (a meta that is not an object, which the history may still hold,
-- becomes {"meta_was": <it>} first) and becomes the time of the upgrade: these times only
-- record when something happened, and nothing runs or is pruned by them sooner than by now()
-- (finished_at: pruned one retention period from now; a running job's lease: 0006 keeps it
-- bounded already). One NOTICE per table gives the count and the first ten ids.
CREATE FUNCTION pg_temp.pgqueue_0007_repair(tbl text, cols text[]) RETURNS void
LANGUAGE plpgsql AS $repair$
DECLARE
    -- quote_ident and quote_literal, not format(): alembic runs this file through a driver
    -- call that reads every percent sign as a placeholder.
    usable CONSTANT text :=
        ' BETWEEN timestamptz ''0001-01-02 00:00+00'' AND timestamptz ''9999-12-31 00:00+00''';
    col text;
    sets text := '';
    was text := '';
    odd text := 'false';
    fixed bigint;
    first_ids text;
BEGIN
    FOREACH col IN ARRAY cols LOOP
        sets := sets || ', ' || quote_ident(col) || ' = CASE WHEN j.' || quote_ident(col)
            || ' IS NULL OR j.' || quote_ident(col) || usable || ' THEN j.' || quote_ident(col)
            || ' ELSE now() END';
        was := was || ' || CASE WHEN j.' || quote_ident(col) || ' IS NULL OR j.'
            || quote_ident(col) || usable || ' THEN ''{}''::jsonb ELSE jsonb_build_object('
            || quote_literal(col || '_was') || ', j.' || quote_ident(col) || '::text) END';
        odd := odd || ' OR j.' || quote_ident(col) || ' NOT' || usable;
    END LOOP;
    EXECUTE 'WITH repaired AS (UPDATE pgqueue.' || quote_ident(tbl) || ' AS j'
        || ' SET meta = CASE WHEN jsonb_typeof(j.meta) = ''object'' THEN j.meta'
        || ' ELSE jsonb_build_object(''meta_was'', j.meta) END' || was || sets
        || ' WHERE ' || odd || ' RETURNING j.id)'
        || ' SELECT (SELECT count(*) FROM repaired),'
        || ' (SELECT string_agg(r.id::text, '', '' ORDER BY r.id)'
        || ' FROM (SELECT id FROM repaired ORDER BY id LIMIT 10) AS r)'
        INTO fixed, first_ids;
    IF fixed > 0 THEN
        RAISE NOTICE USING MESSAGE = 'pgqueue 0007: ' || fixed || ' rows of pgqueue.' || tbl
            || ' held a timestamp no reader can load (ids ' || first_ids
            || CASE WHEN fixed > 10 THEN ' and ' || (fixed - 10) || ' more' ELSE '' END
            || '); each such timestamp is now the time of this upgrade, and the old value is in'
            ' meta->>''<column>_was''';
    END IF;
END;
$repair$;

-- The history first, while claims and acks go on (the UPDATE takes ROW EXCLUSIVE only; on a
-- long history this is the slow part). finished_jobs gains no new check, as in 0006: its rows
-- come from active_jobs, whose checks bound every timestamp from here on, by acks that write
-- now(); a check would cost every ack, and validating it would hold ACCESS EXCLUSIVE on the
-- history, and so every claim, ack and enqueue, over a full scan (0.4 s for 2,000,000 rows on
-- a 2-core server). An odd active row acknowledged between this UPDATE and the lock below
-- keeps its odd time in the history, where pgqueue's own readers still bound it and
-- pgqueue.retry repairs it (0007_zz_functions.sql).
SELECT pg_temp.pgqueue_0007_repair(
    'finished_jobs', ARRAY['run_at', 'created_at', 'started_at', 'finished_at']);

-- Then the three tables that gain checks are locked, all at once and before any long work.
-- Worker statements lock them in either order (a heartbeat or a rescue locks worker_processes
-- before active_jobs, the scheduler periodic_ticks before active_jobs; a prepared statement
-- may take them the other way round), so a migration that held one while it waited for
-- another could close a cycle that PostgreSQL's deadlock check, run once per wait after
-- deadlock_timeout, then broke by aborting the migration. Each try waits at most 100 ms, well
-- under deadlock_timeout, and a failed try lets go of whatever it took, so the worker's
-- statement goes on and the try is made again a moment later; waiting claims, acks and
-- heartbeats are held up 100 ms at most per try. After 60 s of tries the migration stops,
-- naming the likely cause, and changes nothing.
DO $$
DECLARE
    tries integer := 0;
    timeout_was text := current_setting('lock_timeout');
BEGIN
    LOOP
        BEGIN
            PERFORM set_config('lock_timeout', '100ms', true);
            LOCK TABLE pgqueue.active_jobs, pgqueue.worker_processes, pgqueue.periodic_ticks
                IN ACCESS EXCLUSIVE MODE;
            PERFORM set_config('lock_timeout', timeout_was, true);
            EXIT;
        EXCEPTION WHEN lock_not_available THEN
            tries := tries + 1;
            IF tries >= 300 THEN
                RAISE EXCEPTION USING ERRCODE = 'lock_not_available',
                    MESSAGE = 'pgqueue 0007: could not lock pgqueue.active_jobs,'
                        ' pgqueue.worker_processes and pgqueue.periodic_ticks together in 60 s',
                    HINT = 'a long transaction probably holds one of them (see pg_stat_activity'
                        ' and pg_locks); end it, then run the migration again';
            END IF;
        END;  -- a failed try's subtransaction is undone, its lock_timeout with it
        PERFORM pg_sleep(0.1);
    END LOOP;
END;
$$;

-- Then active_jobs, as 0006 did: the checks are added NOT VALID first, the old rows are
-- repaired, and VALIDATE leaves the checks exactly as a fresh install has them. From here on no
-- job can be acknowledged (acks delete from active_jobs) until the commit.
-- The lease check of 0006 (a running job holds a lease) now also bounds a queued job's lease.
ALTER TABLE pgqueue.active_jobs
    DROP CONSTRAINT active_jobs_lease_check,
    ADD CONSTRAINT active_jobs_created_at_check
        CHECK (created_at BETWEEN timestamptz '0001-01-02 00:00+00'
                              AND timestamptz '9999-12-31 00:00+00') NOT VALID,
    ADD CONSTRAINT active_jobs_started_at_check
        CHECK (started_at BETWEEN timestamptz '0001-01-02 00:00+00'
                              AND timestamptz '9999-12-31 00:00+00') NOT VALID,
    ADD CONSTRAINT active_jobs_lease_check
        CHECK ((state = 'queued' OR lease_expires_at IS NOT NULL)
               AND lease_expires_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                        AND timestamptz '9999-12-31 00:00+00') NOT VALID;

SELECT pg_temp.pgqueue_0007_repair(
    'active_jobs', ARRAY['created_at', 'started_at', 'lease_expires_at']);

ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_created_at_check;
ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_started_at_check;
ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_lease_check;

DROP FUNCTION pg_temp.pgqueue_0007_repair(text, text[]);
