-- Revision 0005: a finished job's run_at is a finite time too. Before 0004 a job with an
-- infinite run_at could be cancelled, and pgqueue.finished_jobs kept the value; psycopg cannot
-- load 'infinity' or '-infinity' into a datetime, so app.get_job, `pgqueue jobs list` and
-- `show`, the Django admin and any other reader of that row through pgqueue.jobs failed on it.
--
-- finished_jobs is the history: it can hold millions of rows, and every ack inserts into it.
-- The rows are repaired first, by an UPDATE that takes ROW EXCLUSIVE only (acks, pruning and
-- reads go on meanwhile). Then the constraint is added, validated: that reads the history once
-- under ACCESS EXCLUSIVE, held to the commit, so acks wait that long (0.25 s for 2,000,000
-- rows in memory on a 2-core server; longer from disk). Workers keep their outcomes buffered
-- and write them when the lock goes; nothing fails. Left NOT VALID, the constraint would take
-- no scan, but SQLAlchemy warns on every reflection of a NOT VALID check ("Can't validate
-- argument 'dialect_options'"), which breaks the autogenerate tests of projects that turn
-- warnings into errors; and a one-time wait in a migration costs less than that, for ever.

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
    ADD CONSTRAINT finished_jobs_run_at_check CHECK (isfinite(run_at));
