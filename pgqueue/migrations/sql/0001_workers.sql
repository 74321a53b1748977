-- Every running worker process registers here and refreshes last_seen_at with its heartbeat.
CREATE TABLE pgqueue.worker_processes (
    id            text        PRIMARY KEY,
    hostname      text        NOT NULL,
    pid           integer     NOT NULL,
    queues        jsonb       NOT NULL,
    version       text        NOT NULL,
    heartbeat_s   double precision NOT NULL,
    started_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now()
);
