-- Revision 0007: a schedule's tick is a time its readers can load. periodic_ticks took any
-- timestamp: pgqueue's scheduler bounds what it reads since 0006's release, but any other
-- reader (psycopg, SQLAlchemy, Django) failed on an infinite tick or one past year 9999. The
-- bounds are a job's: 0001-01-02 .. 9999-12-31 00:00 UTC; every tick pgqueue writes is a
-- cron time next to now().
--
-- A tick outside them never stood for a firing of its schedule (no cron time lies there), and
-- it is part of the row's key, so such rows are deleted: the scheduler's next tick is the same
-- with or without them. A created_at outside them becomes now(). The NOTICE gives the count
-- and the first ten schedules. The checks are added NOT VALID first, so that their lock keeps
-- new odd rows out while the old ones are repaired.
ALTER TABLE pgqueue.periodic_ticks
    ADD CONSTRAINT periodic_ticks_tick_check
        CHECK (tick BETWEEN timestamptz '0001-01-02 00:00+00'
                        AND timestamptz '9999-12-31 00:00+00') NOT VALID,
    ADD CONSTRAINT periodic_ticks_created_at_check
        CHECK (created_at BETWEEN timestamptz '0001-01-02 00:00+00'
                              AND timestamptz '9999-12-31 00:00+00') NOT VALID;

DO $$
DECLARE
    dropped bigint;
    fixed bigint;
    first_names text;
BEGIN
    WITH gone AS (
        DELETE FROM pgqueue.periodic_ticks AS p
         WHERE p.tick NOT BETWEEN timestamptz '0001-01-02 00:00+00'
                              AND timestamptz '9999-12-31 00:00+00'
        RETURNING p.name, p.tick
    )
    SELECT (SELECT count(*) FROM gone),
           (SELECT string_agg(quote_literal(g.name) || ' at ' || g.tick::text, ', '
                              ORDER BY g.name, g.tick)
              FROM (SELECT name, tick FROM gone ORDER BY name, tick LIMIT 10) AS g)
      INTO dropped, first_names;
    IF dropped > 0 THEN
        RAISE NOTICE USING MESSAGE = 'pgqueue 0007: ' || dropped || ' rows of'
            ' pgqueue.periodic_ticks held a tick no reader can load (' || first_names
            || CASE WHEN dropped > 10 THEN ' and ' || (dropped - 10) || ' more' ELSE '' END
            || '); no schedule fires at such a time, and they are deleted';
    END IF;
    UPDATE pgqueue.periodic_ticks SET created_at = now()
     WHERE created_at NOT BETWEEN timestamptz '0001-01-02 00:00+00'
                              AND timestamptz '9999-12-31 00:00+00';
    GET DIAGNOSTICS fixed = ROW_COUNT;
    IF fixed > 0 THEN
        RAISE NOTICE USING MESSAGE = 'pgqueue 0007: ' || fixed || ' rows of'
            ' pgqueue.periodic_ticks held a created_at no reader can load; it is now the time'
            ' of this upgrade';
    END IF;
END;
$$;

ALTER TABLE pgqueue.periodic_ticks VALIDATE CONSTRAINT periodic_ticks_tick_check;
ALTER TABLE pgqueue.periodic_ticks VALIDATE CONSTRAINT periodic_ticks_created_at_check;
