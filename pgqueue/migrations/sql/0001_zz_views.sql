-- Views for operators (a stable SQL contract, documented in docs/operations.md).

-- One row per queue that has jobs: counts per state, the age of the oldest runnable job, and
-- the rate of jobs finished over the last five minutes. "scheduled" counts the queued jobs
-- not runnable yet (a future run_at: delayed, or waiting for a retry); it is part of "queued".
CREATE VIEW pgqueue.queue_stats AS
WITH active AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'queued') AS queued,
           count(*) FILTER (WHERE state = 'queued' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           min(run_at) FILTER (WHERE state = 'queued' AND run_at <= now()) AS oldest_runnable
      FROM pgqueue.active_jobs
     GROUP BY queue
), finished AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
           count(*) FILTER (WHERE finished_at > now() - interval '5 minutes') AS recent
      FROM pgqueue.finished_jobs
     GROUP BY queue
)
SELECT coalesce(a.queue, f.queue) AS queue,
       coalesce(a.queued, 0) AS queued,
       coalesce(a.scheduled, 0) AS scheduled,
       coalesce(a.running, 0) AS running,
       coalesce(f.succeeded, 0) AS succeeded,
       coalesce(f.failed, 0) AS failed,
       coalesce(f.cancelled, 0) AS cancelled,
       now() - a.oldest_runnable AS oldest_runnable_age,
       round(coalesce(f.recent, 0) / 5.0, 1)::float8 AS finished_per_minute
  FROM active AS a
  FULL JOIN finished AS f ON f.queue = a.queue;

-- Live worker processes: seen within their last three heartbeats.
CREATE VIEW pgqueue.workers AS
SELECT w.id, w.hostname, w.pid, w.queues, w.version, w.started_at, w.last_seen_at,
       now() - w.last_seen_at AS last_seen_ago,
       coalesce(r.running, 0) AS running
  FROM pgqueue.worker_processes AS w
  LEFT JOIN (
      SELECT worker_id, count(*) AS running
        FROM pgqueue.active_jobs
       WHERE state = 'running'
       GROUP BY worker_id
  ) AS r ON r.worker_id = w.id
 WHERE w.last_seen_at >= now() - make_interval(secs => w.heartbeat_s * 3);
