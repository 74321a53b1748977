-- Revision 0004: a job's run_at is a finite time. PostgreSQL accepts 'infinity' and
-- '-infinity' (through pgqueue.enqueue or a plain INSERT), but every claim reports the wait
-- now() - run_at, which cannot be taken from an infinite timestamp: one '-infinity' row made
-- every claim of its queue fail, and an 'infinity' row could never run (nor be read back by
-- psycopg, which stops at year 9999).
--
-- The constraint is added NOT VALID first: its ACCESS EXCLUSIVE lock, held to the end of the
-- migration's transaction, keeps new infinite rows out while the old ones are rewritten, and
-- VALIDATE then leaves it exactly as a fresh install has it. active_jobs holds active rows
-- only, so both scans are short.
ALTER TABLE pgqueue.active_jobs
    ADD CONSTRAINT active_jobs_run_at_check CHECK (isfinite(run_at)) NOT VALID;

-- Rows already infinite keep their place and meaning, not their value: '-infinity' (due
-- since ever) becomes the time the job was created, 'infinity' (never due) 9999-12-31, which
-- psycopg still reads in any time zone. The old value goes to meta->>'run_at_was' (when meta
-- is an object, as pgqueue writes it) and a NOTICE gives the count and the first ten ids
-- (not every id, as it first did: behind a backlog that made a message of megabytes).
-- Failing instead would block the very upgrade that unblocks the queue, only to have each
-- operator pick the same values by hand.
DO $$
DECLARE
    fixed bigint;
    first_ids text;
BEGIN
    WITH repaired AS (
        UPDATE pgqueue.active_jobs
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
        RAISE NOTICE USING MESSAGE = 'pgqueue 0004: ' || fixed || ' jobs had an infinite'
            ' run_at (ids ' || first_ids
            || CASE WHEN fixed > 10 THEN ' and ' || (fixed - 10) || ' more' ELSE '' END
            || '); it is now finite, and the old value is in meta->>''run_at_was''';
    END IF;
END;
$$;

ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_run_at_check;
