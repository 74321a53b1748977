-- One row per fired tick of a periodic task: its primary key is what makes a tick fire once,
-- whatever the number of schedulers, and it outlives the pruning of the job it created.
CREATE TABLE pgqueue.periodic_ticks (
    name        text        NOT NULL,
    tick        timestamptz NOT NULL,
    job_id      bigint,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, tick)
);
