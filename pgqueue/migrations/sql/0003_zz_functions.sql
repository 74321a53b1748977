-- Revision 0003: notify pgqueue_finished only while someone waits for a job to finish.
-- PostgreSQL wakes every listening backend of the database for every notification, whatever
-- its channel, so each ack statement used to wake every worker's listener: a cost of workers x
-- ack statements. A waiter (pgqueue's wait()/await job) holds the shared advisory locks
-- (7403158, 0..7) on its own connection before it LISTENs and reads its job. The trigger
-- tries one of them exclusively and lets go at once: if it got it, nobody waits and nothing
-- is sent. Otherwise (a waiter, or a concurrent ack on the same slot, picked by backend pid)
-- the notification goes out. The lock is not kept to the end of the transaction: a long
-- transaction that finished jobs would make every new waiter queue behind it. A waiter that
-- registers after the check and reads its row before this transaction commits falls back on
-- its poll; for a worker's ack the gap between the two is the commit itself.
CREATE OR REPLACE FUNCTION pgqueue.notify_jobs_finished() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    payload text;
BEGIN
    IF pg_try_advisory_lock(7403158, mod(pg_backend_pid(), 8)) THEN
        PERFORM pg_advisory_unlock(7403158, mod(pg_backend_pid(), 8));
        RETURN NULL;
    END IF;
    FOR payload IN
        SELECT string_agg(c.id::text, ',')
          FROM (SELECT n.id, (row_number() OVER ()) / 400 AS chunk FROM new_rows AS n) AS c
         GROUP BY c.chunk
    LOOP
        PERFORM pg_notify('pgqueue_finished', payload);
    END LOOP;
    RETURN NULL;
END;
$$;
