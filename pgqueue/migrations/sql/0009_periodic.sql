-- Revision 0009: a pruned tick cannot fire again. Each scheduler refused ticks older than its
-- own catch_up horizon, and pruned rows older than its own catch_up plus an hour: during a
-- rolling deploy that shortened a schedule's catch_up, a new worker pruned ticks that an old
-- worker, whose scheduler had stalled, still found inside its longer horizon, and it gave
-- such a tick a second job. A schedule's watermark is the latest tick pruning ever deleted;
-- the tick insert refuses ticks at or below it, and the prune raises it (never lowers it) in
-- the statement that deletes the ticks. A name with no row has never been pruned.
--
-- A new table (granted to pgqueue_worker, below), and no other change: code that needs 0007
-- or 0008 runs on it, and its schedulers neither raise nor read the watermark. Ticks pruned before this revision (or by
-- such code) leave no watermark. The bounds are those 0007 puts on a tick.
CREATE TABLE pgqueue.periodic_watermarks (
    name            text        PRIMARY KEY,
    pruned_through  timestamptz NOT NULL
        CONSTRAINT periodic_watermarks_pruned_through_check
        CHECK (pruned_through BETWEEN timestamptz '0001-01-02 00:00+00'
                                  AND timestamptz '9999-12-31 00:00+00')
);

-- Schedulers of code needing 0009 read and raise it. roles.sql grants that to pgqueue_worker
-- when re-run; until then they would fail on "permission denied" and no schedule would fire
-- from them, so where roles.sql has run (the role exists) this grants what it grants.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'pgqueue_worker') THEN
        GRANT SELECT, INSERT, UPDATE, DELETE ON pgqueue.periodic_watermarks TO pgqueue_worker;
    END IF;
END
$$;
