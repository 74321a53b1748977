-- Revision 0006: from SQL too, a job holds only values its worker and its readers can use.
-- The Python API refused these before any SQL; pgqueue.enqueue, a plain INSERT or an UPDATE
-- took them, and then:
--   * meta that is not a JSON object (pgqueue.enqueue(meta => '[1]')): a worker with tracing
--     reads meta as a mapping, so every attempt of the job failed before its task ran;
--   * a timeout of 'NaN' or 'Infinity' (the old check, timeout > 0, lets both by, since
--     PostgreSQL orders NaN above every number): asyncio takes a NaN deadline as already
--     past, so every attempt timed out at once; an infinite one meant no timeout, which the
--     Python API spells None;
--   * a run_at outside 0001-01-02 .. 9999-12-31 00:00 UTC (pgqueue.enqueue(run_at =>
--     '200000-01-01')): finite, so 0004's check let it by, but psycopg cannot load it into a
--     datetime in every time zone, so app.get_job, `pgqueue jobs list` and the Django admin
--     failed on the row, as they did on 'infinity' before 0004. The bounds are the ones the
--     Python API checks (RUN_AT_MIN, RUN_AT_MAX) and the value 0004 gives 'infinity'.
--
-- Rows already holding such values keep their meaning, not their value: meta that is not an
-- object becomes {"meta_was": <it>}; a NaN or infinite timeout becomes NULL (no timeout, which
-- is what an infinite one meant); a run_at past the end becomes 9999-12-31, one before the
-- start the time the job was created (now, when that is out of bounds or ahead), as 0004 did
-- with the infinities. The old timeout and run_at go to meta->>'timeout_was' and
-- meta->>'run_at_was', and one NOTICE per table gives the count and the first ten ids.
CREATE FUNCTION pg_temp.pgqueue_0006_repair(tbl text) RETURNS void
LANGUAGE plpgsql AS $repair$
DECLARE
    fixed bigint;
    first_ids text;
BEGIN
    -- quote_ident, not format(): alembic runs this file through a driver call that reads
    -- every percent sign as a placeholder.
    EXECUTE 'WITH repaired AS (UPDATE pgqueue.' || quote_ident(tbl) || $update$ AS j
               SET meta = CASE WHEN jsonb_typeof(j.meta) = 'object' THEN j.meta
                               ELSE jsonb_build_object('meta_was', j.meta) END
                          || CASE WHEN j.timeout < 'Infinity' OR j.timeout IS NULL THEN '{}'
                                  ELSE jsonb_build_object('timeout_was', j.timeout::text) END
                          || CASE WHEN j.run_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                                    AND timestamptz '9999-12-31 00:00+00'
                                  THEN '{}'
                                  ELSE jsonb_build_object('run_at_was', j.run_at::text) END,
                   timeout = CASE WHEN j.timeout < 'Infinity' THEN j.timeout END,
                   run_at = CASE
                       WHEN j.run_at > timestamptz '9999-12-31 00:00+00'
                           THEN timestamptz '9999-12-31 00:00+00'
                       WHEN j.run_at >= timestamptz '0001-01-02 00:00+00' THEN j.run_at
                       WHEN j.created_at BETWEEN timestamptz '0001-01-02 00:00+00' AND now()
                           THEN j.created_at
                       ELSE now() END
             WHERE jsonb_typeof(j.meta) <> 'object'
                OR NOT (j.timeout < 'Infinity')
                OR j.run_at NOT BETWEEN timestamptz '0001-01-02 00:00+00'
                                    AND timestamptz '9999-12-31 00:00+00'
            RETURNING j.id
        )
        SELECT (SELECT count(*) FROM repaired),
               (SELECT string_agg(r.id::text, ', ' ORDER BY r.id)
                  FROM (SELECT id FROM repaired ORDER BY id LIMIT 10) AS r)
    $update$ INTO fixed, first_ids;
    IF fixed > 0 THEN
        RAISE NOTICE USING MESSAGE = 'pgqueue 0006: ' || fixed || ' rows of pgqueue.' || tbl
            || ' held a meta, timeout or run_at no worker can use (ids ' || first_ids
            || CASE WHEN fixed > 10 THEN ' and ' || (fixed - 10) || ' more' ELSE '' END
            || '); they are repaired, and the old values are in meta->>''meta_was'','
            ' ''timeout_was'' and ''run_at_was''';
    END IF;
END;
$repair$;

-- The history first, while claims and acks go on (the UPDATE takes ROW EXCLUSIVE only; on a
-- long history this is the slow part). finished_jobs gains no new check: its rows come from
-- active_jobs, which has them from here on, and validating one would hold ACCESS EXCLUSIVE on
-- the history over a full scan. A bad active row acknowledged between this UPDATE and the lock
-- below keeps its values in the history; pgqueue.retry of it then fails on the new checks.
SELECT pg_temp.pgqueue_0006_repair('finished_jobs');

-- Then active_jobs, as 0004 did: the checks are added NOT VALID first, so that their ACCESS
-- EXCLUSIVE lock (held to the end of the migration's transaction) keeps new bad rows out
-- while the old ones are repaired; VALIDATE then leaves them exactly as a fresh install has
-- them. active_jobs holds active rows only, so both scans are short.
ALTER TABLE pgqueue.active_jobs
    DROP CONSTRAINT active_jobs_timeout_check,
    DROP CONSTRAINT active_jobs_run_at_check,
    ADD CONSTRAINT active_jobs_timeout_check CHECK (timeout > 0 AND timeout < 'Infinity') NOT VALID,
    ADD CONSTRAINT active_jobs_run_at_check
        CHECK (run_at BETWEEN timestamptz '0001-01-02 00:00+00' AND timestamptz '9999-12-31 00:00+00')
        NOT VALID,
    ADD CONSTRAINT active_jobs_meta_check CHECK (jsonb_typeof(meta) = 'object') NOT VALID,
    ADD CONSTRAINT active_jobs_lease_check
        CHECK (state = 'queued'
               OR (lease_expires_at IS NOT NULL
                   AND lease_expires_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                            AND timestamptz '9999-12-31 00:00+00'))
        NOT VALID;

SELECT pg_temp.pgqueue_0006_repair('active_jobs');

-- A running job holds a lease: the rescue gives back running jobs whose lease has expired,
-- so one with no lease (an UPDATE can clear it; pgqueue clears it only when it requeues) or
-- an infinite one stayed running for ever, whatever became of its worker. Such a lease
-- becomes now(): the next rescue pass gives the job back, as it would have had the lease
-- expired, and the worker that may still run it is fenced off by its attempt number as
-- after any rescue. The old value goes to meta->>'lease_expires_at_was' (JSON null for none).
DO $$
DECLARE
    fixed bigint;
    first_ids text;
BEGIN
    WITH repaired AS (
        UPDATE pgqueue.active_jobs AS j
           SET lease_expires_at = now(),
               meta = j.meta || jsonb_build_object('lease_expires_at_was', j.lease_expires_at::text)
         WHERE j.state <> 'queued'
           AND (j.lease_expires_at IS NULL
                OR j.lease_expires_at NOT BETWEEN timestamptz '0001-01-02 00:00+00'
                                              AND timestamptz '9999-12-31 00:00+00')
        RETURNING j.id
    )
    SELECT (SELECT count(*) FROM repaired),
           (SELECT string_agg(r.id::text, ', ' ORDER BY r.id)
              FROM (SELECT id FROM repaired ORDER BY id LIMIT 10) AS r)
      INTO fixed, first_ids;
    IF fixed > 0 THEN
        RAISE NOTICE USING MESSAGE = 'pgqueue 0006: ' || fixed || ' running jobs had no lease'
            ' or an infinite one (ids ' || first_ids
            || CASE WHEN fixed > 10 THEN ' and ' || (fixed - 10) || ' more' ELSE '' END
            || '); their lease now ends now, so the next rescue gives them back, and the old'
            ' value is in meta->>''lease_expires_at_was''';
    END IF;
END;
$$;

ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_timeout_check;
ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_run_at_check;
ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_meta_check;
ALTER TABLE pgqueue.active_jobs VALIDATE CONSTRAINT active_jobs_lease_check;

DROP FUNCTION pg_temp.pgqueue_0006_repair(text);
