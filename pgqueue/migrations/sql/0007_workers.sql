-- Revision 0007: a worker's row holds a heartbeat and times its readers can use.
-- heartbeat_s took any double precision and started_at and last_seen_at any timestamp. The
-- view pgqueue.workers computes make_interval(secs => heartbeat_s * 3) and now() -
-- last_seen_at, so one row with a heartbeat of 'Infinity', 'NaN' or 1e300, or an infinite
-- last_seen_at, failed every SELECT from it; pgqueue's own readers bound what they load since
-- 0006's release, and go on doing so. The bounds: a heartbeat above 0 s and at most 1000
-- years (31,557,600,000 s, what pgqueue.Worker accepts), and times within 0001-01-02 ..
-- 9999-12-31 00:00 UTC, as a job's.
--
-- The checks are added NOT VALID first, so that their ACCESS EXCLUSIVE lock keeps new odd
-- rows out while the old ones are repaired (heartbeats wait for the commit; the table holds a
-- row per worker process). A heartbeat of NaN or above the bound becomes the bound (the
-- readers took NaN as the longest already); one of 0 or less, 0.001 s (the row counted as
-- gone, and still does). An odd time becomes now(). The NOTICE gives the count and the first
-- ten ids.
ALTER TABLE pgqueue.worker_processes
    ADD CONSTRAINT worker_processes_heartbeat_s_check
        CHECK (heartbeat_s > 0 AND heartbeat_s <= 31557600000) NOT VALID,
    ADD CONSTRAINT worker_processes_started_at_check
        CHECK (started_at BETWEEN timestamptz '0001-01-02 00:00+00'
                              AND timestamptz '9999-12-31 00:00+00') NOT VALID,
    ADD CONSTRAINT worker_processes_last_seen_at_check
        CHECK (last_seen_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                AND timestamptz '9999-12-31 00:00+00') NOT VALID;

DO $$
DECLARE
    fixed bigint;
    first_ids text;
BEGIN
    WITH repaired AS (
        UPDATE pgqueue.worker_processes AS w
           SET heartbeat_s = CASE WHEN w.heartbeat_s <= 0 THEN 0.001
                                  ELSE least(w.heartbeat_s, 31557600000) END,
               started_at = CASE WHEN w.started_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                                       AND timestamptz '9999-12-31 00:00+00'
                                 THEN w.started_at ELSE now() END,
               last_seen_at = CASE WHEN w.last_seen_at BETWEEN timestamptz '0001-01-02 00:00+00'
                                                           AND timestamptz '9999-12-31 00:00+00'
                                   THEN w.last_seen_at ELSE now() END
         WHERE NOT (w.heartbeat_s > 0 AND w.heartbeat_s <= 31557600000)
            OR w.started_at NOT BETWEEN timestamptz '0001-01-02 00:00+00'
                                    AND timestamptz '9999-12-31 00:00+00'
            OR w.last_seen_at NOT BETWEEN timestamptz '0001-01-02 00:00+00'
                                      AND timestamptz '9999-12-31 00:00+00'
        RETURNING w.id
    )
    SELECT (SELECT count(*) FROM repaired),
           (SELECT string_agg(r.id, ', ' ORDER BY r.id)
              FROM (SELECT id FROM repaired ORDER BY id LIMIT 10) AS r)
      INTO fixed, first_ids;
    IF fixed > 0 THEN
        RAISE NOTICE USING MESSAGE = 'pgqueue 0007: ' || fixed || ' rows of'
            ' pgqueue.worker_processes held a heartbeat or a time no reader can use (ids '
            || first_ids
            || CASE WHEN fixed > 10 THEN ' and ' || (fixed - 10) || ' more' ELSE '' END
            || '); they now hold the nearest usable value';
    END IF;
END;
$$;

ALTER TABLE pgqueue.worker_processes VALIDATE CONSTRAINT worker_processes_heartbeat_s_check;
ALTER TABLE pgqueue.worker_processes VALIDATE CONSTRAINT worker_processes_started_at_check;
ALTER TABLE pgqueue.worker_processes VALIDATE CONSTRAINT worker_processes_last_seen_at_check;
