-- Revision 0005: a finished job's run_at is a finite time too. Before 0004 a job with an
-- infinite run_at could be cancelled, and pgqueue.finished_jobs kept the value; psycopg cannot
-- load 'infinity' or '-infinity' into a datetime, so app.get_job, `pgqueue jobs list` and
-- `show`, the Django admin and any other reader of that row through pgqueue.jobs failed on it.
--
-- finished_jobs is the history: it can hold millions of rows, and every ack inserts into it.
-- So, unlike 0004, no ACCESS EXCLUSIVE lock is held over a scan of it. The rows are repaired
-- first, by an UPDATE that takes ROW EXCLUSIVE only (acks, pruning and reads go on), and the
-- constraint is added NOT VALID by the last statement: its ACCESS EXCLUSIVE lock is held from
-- there to the commit, with no scan (about 1 ms; it first waits for any query already reading
-- the table, and acks queue behind it meanwhile).
--
-- The constraint stays NOT VALID, on a fresh database as on an upgraded one. A migration is one
-- transaction (alembic's transactional DDL, Django's atomic migration), so a VALIDATE here
-- would hold that lock over a full scan of the history and stop every ack meanwhile: 0.25 s
-- for 2,000,000 rows already in memory on a 2-core server, growing with the history and far
-- longer from disk. Nothing is lost by not validating: PostgreSQL checks a NOT VALID
-- constraint on every row inserted or updated, as it does a validated one; the UPDATE below
-- repairs every row already there, just before; and since 0004 no active row holds an infinite
-- run_at, so none can be carried into the history. Only a row written by hand while this
-- migration runs, between the UPDATE and the ALTER, could slip past: `ALTER TABLE
-- pgqueue.finished_jobs VALIDATE CONSTRAINT finished_jobs_run_at_check`, run on its own later,
-- would find it, under a SHARE UPDATE EXCLUSIVE lock that lets acks through. The one cost
-- seen outside: SQLAlchemy warns when it reflects the table ("Can't validate argument
-- 'dialect_options'"), which alembic's autogenerate avoids with include_name.

-- The same values as 0004: '-infinity' becomes the time the job was created (now, if that is
-- infinite or still ahead), 'infinity' 9999-12-31; the old value goes to meta->>'run_at_was'
-- when meta is an object. The NOTICE gives the count and the first ten ids, not all of them.
DO $$
DECLARE
    fixed bigint;
    first_ids text;
BEGIN
    WITH repaired AS (
        UPDATE pgqueue.finished_jobs
           SET run_at = CASE WHEN run_at = 'infinity' THEN timestamptz '9999-12-31 00:00+00'
                             WHEN isfinite(created_at) THEN least(created_at, now())
                             ELSE now() END,
               meta = CASE WHEN jsonb_typeof(meta) = 'object'
                           THEN meta || jsonb_build_object('run_at_was', run_at::text)
                           ELSE meta END
         WHERE NOT isfinite(run_at)
        RETURNING id
    )
    SELECT (SELECT count(*) FROM repaired),
           (SELECT string_agg(r.id::text, ', ' ORDER BY r.id)
              FROM (SELECT id FROM repaired ORDER BY id LIMIT 10) AS r)
      INTO fixed, first_ids;
    IF fixed > 0 THEN
        RAISE NOTICE USING MESSAGE = 'pgqueue 0005: ' || fixed || ' finished jobs had an'
            ' infinite run_at (ids ' || first_ids
            || CASE WHEN fixed > 10 THEN ' and ' || (fixed - 10) || ' more' ELSE '' END
            || '); it is now finite, and the old value is in meta->>''run_at_was''';
    END IF;
END;
$$;

ALTER TABLE pgqueue.finished_jobs
    ADD CONSTRAINT finished_jobs_run_at_check CHECK (isfinite(run_at)) NOT VALID;
