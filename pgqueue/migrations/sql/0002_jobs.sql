-- Revision 0002: the same rule for queue names, checked for a tenth of the cost. PostgreSQL
-- evaluates every CHECK constraint on every UPDATE, claims and acks included, and the bounded
-- repetition {1,64} made its regex engine spend about 3 µs per claimed row; a plain '+' and a
-- length test accept exactly the same names (only ASCII characters can match).
ALTER TABLE pgqueue.active_jobs
    DROP CONSTRAINT active_jobs_queue_check,
    ADD CONSTRAINT active_jobs_queue_check
        CHECK (queue ~ '^[A-Za-z0-9_.-]+$' AND length(queue) <= 64);
