"""Every SQL statement pgqueue runs, named noun-then-verb. Nothing else in pgqueue holds SQL."""

from typing import LiteralString

SCHEMA_EXISTS: LiteralString = """
SELECT to_regclass('pgqueue.alembic_version') IS NOT NULL
"""

SCHEMA_REVISION_GET: LiteralString = """
SELECT version_num FROM pgqueue.alembic_version
"""

# The schema of the table an unqualified name resolves to on the search_path (as alembic's
# version table without version_table_schema), if any: pg_table_is_visible is true for the
# first relation of that name along the path.
TABLE_SCHEMA_GET: LiteralString = """
SELECT n.nspname FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relname = %s AND pg_catalog.pg_table_is_visible(c.oid)
"""

# The oldest revision code may need and still run on this schema (sql/0007_zz_functions.sql),
# read by code that finds the schema newer than itself, in two statements: whether the
# function exists and this role may call it (a schema before 0007 has none, and a hardened
# database may have revoked EXECUTE from PUBLIC), then the call. Without either, nothing says
# the schema serves older code, and the code refuses it.
SCHEMA_COMPATIBLE_SINCE_CALLABLE: LiteralString = """
SELECT CASE WHEN to_regprocedure('pgqueue.compatible_since()') IS NULL THEN false
            ELSE has_function_privilege(to_regprocedure('pgqueue.compatible_since()'), 'EXECUTE')
       END
"""

SCHEMA_COMPATIBLE_SINCE: LiteralString = """
SELECT pgqueue.compatible_since()
"""

JOBS_INSERT: LiteralString = """
INSERT INTO pgqueue.active_jobs
    (queue, task, args, kwargs, priority, max_attempts, run_at, timeout, unique_key, meta)
VALUES (%s, %s, %s::jsonb, %s::jsonb, %s, %s,
        coalesce(%s::timestamptz, now() + make_interval(secs => %s)), %s, %s, %s::jsonb)
RETURNING id
"""

# The common case, a job to run now: its run_at is the column's default, now(). Three bound
# parameters fewer to encode and send, and no run_at expression to evaluate.
JOBS_INSERT_NOW: LiteralString = """
INSERT INTO pgqueue.active_jobs (queue, task, args, kwargs, priority, max_attempts, timeout, meta)
VALUES (%s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s::jsonb)
RETURNING id
"""

JOBS_INSERT_MANY: LiteralString = """
INSERT INTO pgqueue.active_jobs
    (queue, task, args, kwargs, priority, max_attempts, run_at, timeout, unique_key, meta)
SELECT %s, %s, u.a::jsonb, u.k::jsonb, %s, %s,
       coalesce(%s::timestamptz, now() + make_interval(secs => %s)), %s, NULL, %s::jsonb
  FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS u(a, k, n)
 ORDER BY u.n
RETURNING id
"""

# One queue, woken from idle (an idle worker's latency path): the UPDATE finds its rows
# through id = ANY(ARRAY(...)), a primary-key lookup. A join against the subquery lets the
# planner hash the whole table, and the claim then slows with the backlog.
# JSON columns travel as text: psycopg's jsonb loader costs more than the store's own decoding.
# The last two columns tell the worker where its claim ended (with the wait, whose order is
# run_at's reversed) and how many entries of the claim index the claim read: not counted here
# (NULL), since counting costs this claim 0.03 ms and only matters for a queue with a
# backlog (see JOBS_CLAIM_AFTER).
JOBS_CLAIM_ONE_IDLE: LiteralString = """UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(
    SELECT id FROM pgqueue.active_jobs
     WHERE state = 'queued' AND queue = %(queue)s AND run_at <= now()
     ORDER BY priority DESC, run_at, id
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority, NULL::bigint
"""

# One queue with a backlog: JOBS_CLAIM_ONE_IDLE, and the count of claim-index entries read
# (JOBS_CLAIM_ONE_PAGES also counts pages). Each count is the backend's counter after the scan
# less its value before: the counter also holds what earlier statements read until the
# backend reports its statistics, about once a second. The CTE "before" is read first by a
# one-time filter that runs before the scan, and only then by RETURNING. Entries the scan
# returned but could not take (dead, or locked by another claim) are counted as entries;
# entries that fail "run_at <= now()" are checked inside the index and count only as the
# pages that hold them (see JOBS_CLAIM_ONE_SKIP).
JOBS_CLAIM_ONE: LiteralString = """WITH before AS MATERIALIZED (
    SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass) AS n
)
UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(
    SELECT id FROM pgqueue.active_jobs
     WHERE (SELECT n FROM before) IS NOT NULL
       AND state = 'queued' AND queue = %(queue)s AND run_at <= now()
     ORDER BY priority DESC, run_at, id
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority,
          (SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass)
                  - n FROM before)
"""

# JOBS_CLAIM_ONE, counting the claim-index pages read as well, in a fourteenth column. The
# worker asks for them about once a second: the second counter and the column per row cost a
# claim of 100 about 0.05 ms (0.03 ms for the column alone), 2 % of a one-process drain.
JOBS_CLAIM_ONE_PAGES: LiteralString = """WITH before AS MATERIALIZED (
    SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass) AS n,
           pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass) AS b
)
UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(
    SELECT id FROM pgqueue.active_jobs
     WHERE (SELECT n FROM before) IS NOT NULL
       AND state = 'queued' AND queue = %(queue)s AND run_at <= now()
     ORDER BY priority DESC, run_at, id
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority,
          (SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass)
                  - n FROM before),
          (SELECT pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)
                  - b FROM before)
"""

# Several queues, each with its own limit: the LATERAL subquery is MATERIALIZED by the CTE so
# LIMIT applies once per queue, not per row. It sets and returns what JOBS_CLAIM_ONE_PAGES
# does, both counts included, on every claim (a worker of several queues pays for them, see
# JOBS_CLAIM_ONE_PAGES, beside the 0.1 ms more this statement takes to plan, which is why the
# one-queue forms exist).
JOBS_CLAIM: LiteralString = """
WITH before AS MATERIALIZED (
    SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass) AS n,
           pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass) AS b
), picked AS MATERIALIZED (
    SELECT c.id
      FROM unnest(%(queues)s::text[], %(limits)s::int[]) AS w(queue, n)
      CROSS JOIN LATERAL (
          SELECT id FROM pgqueue.active_jobs
           WHERE state = 'queued' AND queue = w.queue AND run_at <= now()
           ORDER BY priority DESC, run_at, id
           LIMIT w.n
           FOR UPDATE SKIP LOCKED
      ) AS c
     WHERE (SELECT n FROM before) IS NOT NULL
)
UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority,
          (SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass)
                  - n FROM before),
          (SELECT pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)
                  - b FROM before)
"""

# A counted claim of queues without a backlog: JOBS_CLAIM, and when it takes nothing, one row
# of NULLs that carries the counts (an UPDATE that returns no row has nothing to carry them).
# A caught-up worker counts at most once per rescan interval, so that an empty queue still
# tells it what its claims step over (the jobs scheduled for later of a queue with none due,
# see JOBS_CLAIM_ONE_SKIP). Reading "claimed" in the second branch runs the UPDATE to its
# end first, so that branch counts the whole scan. This form costs about 7 % more than
# JOBS_CLAIM_ONE for a claim of 100, too much for claims with a backlog, which take rows.
JOBS_CLAIM_LOOK: LiteralString = """
WITH before AS MATERIALIZED (
    SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass) AS n,
           pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass) AS b
), picked AS MATERIALIZED (
    SELECT c.id
      FROM unnest(%(queues)s::text[], %(limits)s::int[]) AS w(queue, n)
      CROSS JOIN LATERAL (
          SELECT id FROM pgqueue.active_jobs
           WHERE state = 'queued' AND queue = w.queue AND run_at <= now()
           ORDER BY priority DESC, run_at, id
           LIMIT w.n
           FOR UPDATE SKIP LOCKED
      ) AS c
     WHERE (SELECT n FROM before) IS NOT NULL
), claimed AS (
    UPDATE pgqueue.active_jobs AS j
       SET state = 'running',
           attempts = j.attempts + 1,
           started_at = now(),
           lease_expires_at = now() + make_interval(secs => %(lease)s),
           worker_id = %(worker)s
     WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
    RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
              j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
              j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority,
              (SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass)
                      - n FROM before),
              (SELECT pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)
                      - b FROM before)
)
SELECT * FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass) - n,
       pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass) - b
  FROM before
 WHERE NOT EXISTS (SELECT FROM claimed)
"""

# A claim from the head that skips the jobs not yet due. The claim index is ordered (queue,
# priority DESC, run_at, id), so "run_at <= now()" cannot end a scan: it is checked entry by
# entry. A claim that wants more jobs than are due (an idle worker's, any claim at the end of
# a backlog) walks every job of its queue scheduled for later, and one with jobs scheduled at
# a higher priority than the due ones walks those before taking any: 300,000 jobs due
# tomorrow cost each claim 11-13 ms instead of 0.1-2 ms. This statement reads the queue one
# priority at a time, highest first (a recursive CTE: one index descent finds the next lower
# priority that holds any queued job), and within a priority only the entries due: with
# the priority fixed, "run_at <= now()" ends the scan at the first entry not due. The
# recursion and the LATERAL subquery are pulled only as far as the LIMIT needs: a claim
# filled from the highest priority reads no other. It costs about 0.17 ms more than
# JOBS_CLAIM_ONE_IDLE and a quarter more than JOBS_CLAIM_ONE for 100 rows (planning, and a
# descent per priority read), so the worker uses it only when a probe (JOBS_CLAIM_PROBE)
# finds that it reads many fewer index pages than a claim from the head (see
# Worker._watch_skipping). It counts nothing (NULL).
JOBS_CLAIM_ONE_SKIP: LiteralString = """UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(
    WITH RECURSIVE band AS (
        (SELECT priority FROM pgqueue.active_jobs
          WHERE state = 'queued' AND queue = %(queue)s
          ORDER BY priority DESC
          LIMIT 1)
      UNION ALL
        SELECT (SELECT a.priority FROM pgqueue.active_jobs AS a
                 WHERE a.state = 'queued' AND a.queue = %(queue)s AND a.priority < band.priority
                 ORDER BY a.priority DESC
                 LIMIT 1)
          FROM band WHERE band.priority IS NOT NULL
    )
    SELECT c.id FROM band CROSS JOIN LATERAL (
        SELECT id FROM pgqueue.active_jobs
         WHERE state = 'queued' AND queue = %(queue)s AND priority = band.priority
           AND run_at <= now()
         ORDER BY priority DESC, run_at, id
         LIMIT %(limit)s
         FOR UPDATE SKIP LOCKED) AS c
     LIMIT %(limit)s))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority, NULL::bigint,
          NULL::bigint
"""

# Whether skipping would pay, for one queue: the pages a claim from the head reads to find
# %(limit)s due jobs, and those JOBS_CLAIM_ONE_SKIP's scan reads, neither taking a lock. Pages
# of the claim index and of the table both count: statistics taken while no job was due can
# make the planner read the head as a scan of the whole table, which reads no index page.
# Index entries that a scan steps over without returning them are not only those of jobs not
# yet due: entries of claimed jobs that an earlier scan found dead to every snapshot are marked
# so and skipped inside the index as well, and a fast drain leaves thousands of them at the
# head of its queue between two vacuums. A claim's pages alone cannot tell the two apart; the
# skipping scan steps over the first, not the second. The CTEs are read in dependency order:
# the head's count before "middle", "middle" before the skipping scan's first descent.
JOBS_CLAIM_PROBE: LiteralString = """
WITH start AS MATERIALIZED (
    SELECT (pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)
            + pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs'::regclass)) AS b
), head AS MATERIALIZED (
    SELECT count(*) AS n FROM (
        SELECT id FROM pgqueue.active_jobs
         WHERE (SELECT b FROM start) IS NOT NULL
           AND state = 'queued' AND queue = %(queue)s AND run_at <= now()
         ORDER BY priority DESC, run_at, id
         LIMIT %(limit)s) AS h
), middle AS MATERIALIZED (
    SELECT (pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)
            + pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs'::regclass)) AS b
      FROM head
), skipping AS MATERIALIZED (
    WITH RECURSIVE band AS (
        (SELECT priority FROM pgqueue.active_jobs
          WHERE (SELECT b FROM middle) IS NOT NULL AND state = 'queued' AND queue = %(queue)s
          ORDER BY priority DESC
          LIMIT 1)
      UNION ALL
        SELECT (SELECT a.priority FROM pgqueue.active_jobs AS a
                 WHERE a.state = 'queued' AND a.queue = %(queue)s AND a.priority < band.priority
                 ORDER BY a.priority DESC
                 LIMIT 1)
          FROM band WHERE band.priority IS NOT NULL
    )
    SELECT count(*) AS n FROM (
        SELECT c.id FROM band CROSS JOIN LATERAL (
            SELECT id FROM pgqueue.active_jobs
             WHERE state = 'queued' AND queue = %(queue)s AND priority = band.priority
               AND run_at <= now()
             ORDER BY priority DESC, run_at, id
             LIMIT %(limit)s) AS c
         LIMIT %(limit)s) AS s
)
SELECT (SELECT b FROM middle) - (SELECT b FROM start),
       (pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)
           + pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs'::regclass))
           - (SELECT b FROM middle)
  FROM skipping
"""

# The claim-index pages one descent from the root to a leaf reads: what each queue of a claim
# costs it beside the pages its entries fill (see Worker._note_pages). No queue is named ''
# (active_jobs_queue_check), so the scan finds nothing: it descends to the leftmost leaf, whose
# high key ends it there, however many dead entries that leaf holds. The first scan only
# warms the backend's cached metapage (read again after each VACUUM or ANALYZE of the table),
# so that the second, the one counted, reads the descent alone. The worker asks about once a
# minute at most, on its maintenance connection (see Worker._still_over).
JOBS_CLAIM_DESCENT: LiteralString = """
WITH warm AS MATERIALIZED (
    SELECT count(*) AS n FROM (
        SELECT id FROM pgqueue.active_jobs
         WHERE state = 'queued' AND queue = ''
         ORDER BY priority DESC, run_at, id
         LIMIT 1) AS w
), start AS MATERIALIZED (
    SELECT pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass) AS b
      FROM warm
), descent AS MATERIALIZED (
    SELECT count(*) AS n FROM (
        SELECT id FROM pgqueue.active_jobs
         WHERE (SELECT b FROM start) IS NOT NULL AND state = 'queued' AND queue = ''
         ORDER BY priority DESC, run_at, id
         LIMIT 1) AS d
)
SELECT pg_stat_get_xact_blocks_fetched('pgqueue.active_jobs_claim_idx'::regclass)
       - (SELECT b FROM start)
  FROM descent
"""

# Several queues, skipping the jobs not yet due: JOBS_CLAIM_ONE_SKIP for each queue, with
# its own limit, as JOBS_CLAIM does it for JOBS_CLAIM_ONE. The recursive CTE refers to the
# queue of the LATERAL row, so it is read again for each queue.
JOBS_CLAIM_SKIP: LiteralString = """
WITH picked AS MATERIALIZED (
    SELECT c.id
      FROM unnest(%(queues)s::text[], %(limits)s::int[]) AS w(queue, n)
      CROSS JOIN LATERAL (
          WITH RECURSIVE band AS (
              (SELECT priority FROM pgqueue.active_jobs
                WHERE state = 'queued' AND queue = w.queue
                ORDER BY priority DESC
                LIMIT 1)
            UNION ALL
              SELECT (SELECT a.priority FROM pgqueue.active_jobs AS a
                       WHERE a.state = 'queued' AND a.queue = w.queue
                         AND a.priority < band.priority
                       ORDER BY a.priority DESC
                       LIMIT 1)
                FROM band WHERE band.priority IS NOT NULL
          )
          SELECT d.id FROM band CROSS JOIN LATERAL (
              SELECT id FROM pgqueue.active_jobs
               WHERE state = 'queued' AND queue = w.queue AND priority = band.priority
                 AND run_at <= now()
               ORDER BY priority DESC, run_at, id
               LIMIT w.n
               FOR UPDATE SKIP LOCKED) AS d
           LIMIT w.n
      ) AS c
)
UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority, NULL::bigint,
          NULL::bigint
"""

# A claim from the head reads the claim index in claim order, walking past the entries of
# rows other claims hold locked and of rows already claimed that no scan or VACUUM has removed
# yet. While some transaction holds the cleanup horizon back (a report left open, say),
# nothing can remove those, and every claim from the head walks all the rows claimed since
# it began: a drain beside an idle REPEATABLE READ snapshot fell from about 25,000 to 4,500
# jobs/s within 150,000 jobs. A claim of a queue with a backlog (JOBS_CLAIM_ONE, JOBS_CLAIM)
# returns how many index entries it read; when a claim from the head read thousands more
# than it took, the worker's next claims of each queue with a backlog resume where that
# queue's last claim ended, given as the priority and id of its last row in claim order
# (NULL for a queue without a point: read from the head).
# The row's run_at is looked up: the row is still running, or in history with the run_at it
# had (if it went back to the queue, or was deleted, the claim reads from the head). Such a
# claim takes, in two ordered parts, every runnable job of a higher priority, then the jobs
# of the same priority after the point. Only when they fill less than the limit does it
# also read from the head, skipping what it already took: lower priorities, and jobs that
# became runnable behind the point (a lease given back, a job enqueued with run_at in the
# past). The worker claims from the head again after a while (a second, or longer the more
# that claim walked), so such a job waits at most that long behind a queue that never runs
# short. Planning this statement costs about 0.3 ms more than JOBS_CLAIM_ONE, which is why
# claims from the head stay the rule.
# A queue without a backlog (its worker woken from idle, "back" > 0) neither reads from the
# head nor starts at the point itself: its claims are short every time, and reading from the
# head would walk every dead entry again. It takes the jobs after a point stepped back by
# "back" seconds of run_at, which finds those whose enqueuing transaction committed after
# younger ones were claimed, then lower priorities, each part read from where it starts; the
# worker claims from the head again within a second for the rest. A point whose run_at is
# gone reads from the head, as a queue with a backlog does. JOBS_CLAIM_ONE_AFTER does the same
# for one idle queue at the cost of JOBS_CLAIM_ONE_IDLE; this statement costs 0.8 ms more.
JOBS_CLAIM_AFTER: LiteralString = """
WITH before AS MATERIALIZED (
    SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass) AS n
), picked AS MATERIALIZED (
    SELECT c.id
      FROM unnest(%(queues)s::text[], %(limits)s::int[], %(priorities)s::int[],
                  %(ids)s::bigint[], %(backs)s::float8[]) AS w(queue, n, priority, id, back)
      CROSS JOIN LATERAL (
          SELECT coalesce(
              (SELECT run_at FROM pgqueue.active_jobs WHERE id = w.id AND state = 'running'),
              (SELECT run_at FROM pgqueue.finished_jobs WHERE id = w.id)) AS run_at
      ) AS point
      CROSS JOIN LATERAL (
          WITH ahead AS MATERIALIZED (
              SELECT id FROM (
                  SELECT id FROM (
                      SELECT id FROM pgqueue.active_jobs
                       WHERE state = 'queued' AND queue = w.queue AND run_at <= now()
                         AND priority > w.priority
                       ORDER BY priority DESC, run_at, id
                       LIMIT w.n
                       FOR UPDATE SKIP LOCKED) AS higher
                  UNION ALL
                  SELECT id FROM (
                      SELECT id FROM pgqueue.active_jobs
                       WHERE state = 'queued' AND queue = w.queue AND run_at <= now()
                         AND priority = w.priority
                         AND (run_at, id) > (point.run_at - make_interval(secs => w.back), w.id)
                       ORDER BY priority DESC, run_at, id
                       LIMIT w.n
                       FOR UPDATE SKIP LOCKED) AS later
              ) AS a LIMIT w.n)
          SELECT id FROM ahead
          UNION ALL
          SELECT id FROM (
              SELECT id FROM pgqueue.active_jobs
               WHERE state = 'queued' AND queue = w.queue AND run_at <= now()
                 AND id <> ALL(ARRAY(SELECT id FROM ahead))
               ORDER BY priority DESC, run_at, id
               LIMIT CASE WHEN w.back = 0 OR point.run_at IS NULL
                          THEN w.n - (SELECT count(*) FROM ahead) ELSE 0 END
               FOR UPDATE SKIP LOCKED) AS head
          UNION ALL
          SELECT id FROM (
              SELECT id FROM pgqueue.active_jobs
               WHERE state = 'queued' AND queue = w.queue AND run_at <= now()
                 AND priority < w.priority
               ORDER BY priority DESC, run_at, id
               LIMIT CASE WHEN w.back = 0 OR point.run_at IS NULL
                          THEN 0 ELSE w.n - (SELECT count(*) FROM ahead) END
               FOR UPDATE SKIP LOCKED) AS lower
      ) AS c
     WHERE (SELECT n FROM before) IS NOT NULL
)
UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority,
          (SELECT pg_stat_get_xact_tuples_returned('pgqueue.active_jobs_claim_idx'::regclass)
                  - n FROM before)
"""

# One idle queue resuming (see JOBS_CLAIM_AFTER): the jobs of a higher priority, those after
# the point stepped back by %(back)s seconds, those of a lower priority, each read from where
# it starts, and only if the point's run_at is gone, the head. The claim takes the first
# %(limit)s of those in that order. It counts nothing (NULL): claims from the head decide.
JOBS_CLAIM_ONE_AFTER: LiteralString = """WITH point AS MATERIALIZED (
    SELECT coalesce(
        (SELECT run_at FROM pgqueue.active_jobs WHERE id = %(id)s AND state = 'running'),
        (SELECT run_at FROM pgqueue.finished_jobs WHERE id = %(id)s))
        - make_interval(secs => %(back)s) AS run_at
)
UPDATE pgqueue.active_jobs AS j
   SET state = 'running',
       attempts = j.attempts + 1,
       started_at = now(),
       lease_expires_at = now() + make_interval(secs => %(lease)s),
       worker_id = %(worker)s
 WHERE j.id = ANY(ARRAY(
    SELECT id FROM (
        SELECT id FROM (
            SELECT id FROM pgqueue.active_jobs
             WHERE state = 'queued' AND queue = %(queue)s AND run_at <= now()
               AND priority > %(priority)s
             ORDER BY priority DESC, run_at, id
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED) AS higher
        UNION ALL
        SELECT id FROM (
            SELECT id FROM pgqueue.active_jobs
             WHERE state = 'queued' AND queue = %(queue)s AND run_at <= now()
               AND priority = %(priority)s AND (run_at, id) > ((SELECT run_at FROM point), %(id)s)
             ORDER BY priority DESC, run_at, id
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED) AS later
        UNION ALL
        SELECT id FROM (
            SELECT id FROM pgqueue.active_jobs
             WHERE state = 'queued' AND queue = %(queue)s AND run_at <= now()
               AND priority < %(priority)s
             ORDER BY priority DESC, run_at, id
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED) AS lower
        UNION ALL
        SELECT id FROM (
            SELECT id FROM pgqueue.active_jobs
             WHERE (SELECT run_at FROM point) IS NULL
               AND state = 'queued' AND queue = %(queue)s AND run_at <= now()
             ORDER BY priority DESC, run_at, id
             LIMIT %(limit)s
             FOR UPDATE SKIP LOCKED) AS head
    ) AS c LIMIT %(limit)s))
RETURNING j.id, j.queue, j.task, j.args::text, j.kwargs::text, j.attempts, j.max_attempts,
          j.timeout, j.meta::text, extract(epoch FROM now() - j.run_at)::float8,
          j.last_error IS NOT DISTINCT FROM 'worker lost', j.priority, NULL::bigint
"""

# Whether a job lies behind where an idle queue's resumed claims read (JOBS_CLAIM_ONE_AFTER's
# "later" branch): runnable, of the point's priority, at or before the point stepped back by
# ``back`` seconds. Such a job committed that long after younger ones were claimed. The worker
# asks once a second on its maintenance connection, so that the scan over the entries a held
# horizon keeps at the head runs beside the claims instead of delaying one. A point whose row
# is gone counts as "behind": the claim then reads from the head anyway. A scalar subquery in
# claim order keeps it on the claim index: EXISTS, which drops ORDER BY and LIMIT, let the
# planner scan the whole table, every dead row version with it.
JOBS_BEHIND_POINT: LiteralString = """WITH point AS MATERIALIZED (
    SELECT coalesce(
        (SELECT run_at FROM pgqueue.active_jobs WHERE id = %(id)s AND state = 'running'),
        (SELECT run_at FROM pgqueue.finished_jobs WHERE id = %(id)s))
        - make_interval(secs => %(back)s) AS run_at
)
SELECT (SELECT run_at FROM point) IS NULL OR (
    SELECT id FROM pgqueue.active_jobs
     WHERE state = 'queued' AND queue = %(queue)s AND run_at <= now()
       AND priority = %(priority)s AND (run_at, id) <= ((SELECT run_at FROM point), %(id)s)
     ORDER BY priority DESC, run_at, id
     LIMIT 1) IS NOT NULL
"""


# A job's errors keep its first entry and its last nine (each error and traceback up to 64 KiB):
# a job of max_attempts=1000, or one retried by hand again and again, carried every attempt's
# entry, megabytes read by every `jobs show` and written again by every ack of the job. The
# oldest of the last nine says in "dropped" how many entries were left out before it. An array
# of ten becomes: its first entry, the next eight but its oldest (the one the count goes on),
# the count added up, and the new entry; a longer one (written before this bound) shrinks to
# ten at once. Below ten entries, the one test more than a plain append reads one element.
# Whatever SQL wrote in the column, nothing here raises: errors that is not an array reads
# NULL at index 9 and is appended to as before, and "dropped" is added up only if a number.
# An entry that is not an object (SQL's) cannot carry the count: it is counted among those
# left out, and the count stands alone in its place (added to it, [5] || {...} nested the
# count in an array, where the next shrink no longer found it, and the count restarted).
def _errors_plus(errors: LiteralString, entry: LiteralString) -> LiteralString:
    """SQL: the jsonb array ``errors`` with the jsonb object ``entry`` appended, bounded."""
    return (
        "CASE WHEN " + errors + "->9 IS NULL THEN " + errors + " || jsonb_build_array(" + entry
        + ") ELSE jsonb_build_array(" + errors + "->0, CASE jsonb_typeof(" + errors + "->-8)"
        + " WHEN 'object' THEN " + errors + "->-8 ELSE '{}' END"
        + " || jsonb_build_object('dropped', jsonb_array_length(" + errors + ") - 9"
        + " + CASE jsonb_typeof(" + errors + "->-8) WHEN 'object' THEN 0 ELSE 1 END"
        + " + coalesce(CASE jsonb_typeof(" + errors + "->1->'dropped') WHEN 'number' THEN ("
        + errors + "->1->>'dropped')::numeric END, 0)))"
        + " || jsonb_path_query_array(" + errors + ", '$[last - 6 to last]')"
        + " || jsonb_build_array(" + entry + ") END"
    )  # fmt: skip


_FINISHED_COLUMNS = """
    (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at, created_at,
     started_at, finished_at, worker_id, timeout, unique_key, result, last_error, errors, meta)
"""

# One statement acknowledges a whole batch: retries go back to queued, the rest move to history.
# Every row is fenced by (id, attempts, state = 'running'): a worker that lost its lease
# changes nothing. Retries without an error (Retry raised by the task) give the attempt back
# (written again after a lost reply, they go through JOBS_LOCK_CLAIMS).
# A job asked to cancel while this attempt ran goes to history as cancelled instead of back to
# the queue: its worker learns of a cancel only at a heartbeat, and queued again, the job ran
# once more (to its end, when shorter than a heartbeat) after pgqueue.cancel said "requested".
# (A cancel committed while this statement runs leaves the row running: the snapshot predates
# the flag, and the retry branch re-checks the locked row and skips it. The acker then sends
# such an outcome once more, and that statement ends the job cancelled.)
# It returns one row: the ids it wrote, those of them it was asked to retry but ended
# cancelled, and the attempt of each id written, so that the worker reports what happened (one
# row: no per-job tuple to read). An id alone does not name an outcome: a stale attempt and the
# job's next one can travel in one batch. ids and attempts pair up without a sort: both read
# retried, then done, and a CTE's rows are read back in the order it stored them (sorting
# them cost the statement 3 % in paired runs of 200-job acks; this form, nothing measurable).
# The fence compares j.state with o.running, a join clause, not with a constant: statistics
# taken while nothing ran would make "state = 'running'" look like zero rows, and the planner
# would then rescan the whole batch once per acknowledged row. The outcomes travel as one JSON
# array of [id, attempt, result, state, error, traceback, delay], a success without an error
# as [id, attempt, result] alone: encoding seven parallel arrays element by element cost the
# worker more than the statement costs the server.
# A job already in history (put there by hand, say) leaves active_jobs and keeps its history
# row. NOT EXISTS does that, not ON CONFLICT DO NOTHING: a speculative insertion writes a
# second WAL record per row and cost the acker's backend 7-11 % more CPU per job. Two acks
# cannot race to insert one id: each first deletes the row from active_jobs, which locks it;
# were one to, its unique violation fails the batch, and the acker's retry skips that row.
# Its rows are locked in the order of their ids, as every other statement that waits for
# several job rows locks them: a session locking some of them in that order (an admin
# cancelling a selection) then never holds one the ack waits for while it waits for one the
# ack holds, a cycle PostgreSQL breaks by aborting one of the two ('deadlock detected').
# Without retries only done locks rows, in the order of the outcomes, which jobs_ack sorts by
# id (its plans read them in order: a hash join of active_jobs, read by id, probed by o; or a
# lookup per outcome). A batch with retries locks its rows first (locked), in the order of
# their ids: retried and done each locked theirs in that order, the retries first, and a batch
# that retried a job and ended a lower one held the first while it waited for the second. That
# costs such a batch 10 % (200 outcomes, 20 retries), and would cost the others 20-25 %; only
# rows the fence matches are locked (a stale outcome waits for no one, as before).
JOBS_ACK: LiteralString = (
    """
WITH o AS (
    SELECT (e->>0)::bigint AS id, (e->>1)::int AS attempt, coalesce(e->>3, 'succeeded') AS state,
           e->>2 AS result, e->>4 AS error, e->>5 AS tb, coalesce((e->>6)::float8, 0) AS delay,
           'running'::text AS running
      FROM jsonb_array_elements(%(outcomes)s::jsonb) AS e
), locked AS MATERIALIZED (
    SELECT j.id
      FROM pgqueue.active_jobs AS j
      JOIN o ON j.id = o.id AND j.attempts = o.attempt AND j.state = o.running
     WHERE j.id = ANY(ARRAY(SELECT id FROM o)) AND EXISTS (SELECT FROM o WHERE state = 'queued')
     ORDER BY j.id
       FOR UPDATE OF j
), ids AS (
    SELECT id FROM locked
    UNION ALL
    SELECT id FROM o WHERE NOT EXISTS (SELECT FROM o WHERE state = 'queued')
), retried AS (
    UPDATE pgqueue.active_jobs AS j
       SET state = 'queued',
           run_at = now() + make_interval(secs => o.delay),
           attempts = CASE WHEN o.error IS NULL THEN j.attempts - 1 ELSE j.attempts END,
           worker_id = NULL,
           lease_expires_at = NULL,
           last_error = coalesce(o.error, j.last_error),
           errors = CASE WHEN o.error IS NULL THEN j.errors ELSE """  # noqa: S608 - constants only (_errors_plus)
    + _errors_plus(
        "j.errors",
        "jsonb_build_object('attempt', o.attempt, 'at', now(), 'error', o.error,"
        " 'traceback', o.tb)",
    )
    + """ END
      FROM o
     WHERE j.id = ANY(ARRAY(SELECT id FROM ids)) AND o.state = 'queued' AND j.id = o.id
       AND j.attempts = o.attempt AND j.state = o.running AND NOT j.cancel_requested
    RETURNING j.id, o.attempt
), done AS (
    DELETE FROM pgqueue.active_jobs AS j
     USING o
     WHERE j.id = ANY(ARRAY(SELECT id FROM ids))
       AND (o.state <> 'queued' OR j.cancel_requested)
       AND j.id = o.id AND j.attempts = o.attempt AND j.state = o.running
    RETURNING j.*, o.state AS new_state, o.result AS new_result, o.error AS new_error,
              o.tb AS new_tb
), moved AS (
    INSERT INTO pgqueue.finished_jobs
        (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at,
         created_at, started_at, finished_at, worker_id, timeout, unique_key, result,
         last_error, errors, meta)
    SELECT id, queue, task, args, kwargs,
           CASE WHEN new_state = 'queued' THEN 'cancelled' ELSE new_state END, priority,
           CASE WHEN new_state = 'queued' AND new_error IS NULL THEN attempts - 1
                ELSE attempts END,
           max_attempts, run_at, created_at, started_at, now(), worker_id, timeout, unique_key,
           new_result::jsonb,
           CASE WHEN new_state = 'queued' THEN 'cancelled on request'
                ELSE coalesce(new_error, last_error) END,
           CASE WHEN new_error IS NULL THEN errors ELSE """
    + _errors_plus(
        "errors",
        "jsonb_build_object('attempt', attempts, 'at', now(), 'error', new_error,"
        " 'traceback', new_tb)",
    )
    + """ END,
           meta
      FROM done
     WHERE NOT EXISTS (SELECT FROM pgqueue.finished_jobs AS f WHERE f.id = done.id)
    RETURNING id
)
SELECT ARRAY(SELECT id FROM retried UNION ALL SELECT id FROM done),
       ARRAY(SELECT id FROM done WHERE new_state = 'queued'),
       ARRAY(SELECT attempt FROM retried UNION ALL SELECT attempts FROM done)
"""
)

# An outcome that gives its attempt back (a Retry without an error) is written again after its
# statement failed: that statement may have committed, its reply lost, and the job's next claim
# then has the same attempts, which JOBS_ACK's fence cannot tell from the claim the outcome
# ends. Before it is written again, the rows of such outcomes' jobs are locked, so that no claim
# takes one until the write commits, and read: whether each is still running under this
# worker. (The worker's own claims of them are paused and checked by the acker: see
# Acker._write_again.) A job that left active_jobs is read from the history: the outcome may
# have ended it (cancelled, as asked while it ran), or another worker's claim after it.
# JOBS_ACK itself does not compare worker_id: compared with a parameter, or with a column of
# its outcomes, the generic plan of the prepared ack scanned active_jobs and rescanned the
# batch per row, 4.3 ms becoming 7 to 49 ms for 200 outcomes, 20 retries.
JOBS_LOCK_CLAIMS: LiteralString = """
WITH locked AS MATERIALIZED (
    SELECT id, attempts, state, worker_id
      FROM pgqueue.active_jobs
     WHERE id = ANY(%(ids)s::bigint[])
     ORDER BY id
       FOR UPDATE
)
SELECT id, attempts, state, worker_id FROM locked
UNION ALL
SELECT id, attempts, state, worker_id
  FROM pgqueue.finished_jobs
 WHERE id = ANY(%(ids)s::bigint[]) AND id NOT IN (SELECT id FROM locked)
"""

# A claim counts the attempt (attempts + 1): a queued job whose attempts already is the
# largest integer, which SQL can write, makes that claim fail, and every claim of its queue
# after it. Run only after a claim failed so: such a job moves to history as failed, saying
# why, and the claims go on. It reads the queued rows of the queues claimed from. There may be
# several: they are locked first, skipping those another session holds, which claims skip too
# (an admin's cancel ends them, another worker's run of this fails them, and a claim that
# reaches one later fails again and brings this back). It waited for them, and the worker's
# claims and maintenance with it, for as long as a session left open held one; and, waiting
# while holding some, it could deadlock with an admin cancelling two of them in one transaction.
JOBS_FAIL_UNCOUNTABLE: LiteralString = (
    """
WITH locked AS MATERIALIZED (
    SELECT id
      FROM pgqueue.active_jobs
     WHERE state = 'queued' AND queue = ANY(%(queues)s::text[]) AND attempts = 2147483647
       FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM pgqueue.active_jobs AS j
     USING locked
     WHERE j.id = locked.id AND j.state = 'queued' AND j.attempts = 2147483647
    RETURNING j.*
), moved AS (
    INSERT INTO pgqueue.finished_jobs
        (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at,
         created_at, started_at, finished_at, worker_id, timeout, unique_key, result,
         last_error, errors, meta)
    SELECT id, queue, task, args, kwargs, 'failed', priority, attempts, max_attempts, run_at,
           created_at, started_at, now(), worker_id, timeout, unique_key, NULL, %(error)s,
           """  # noqa: S608 - constants only (_errors_plus)
    + _errors_plus(
        "errors",
        "jsonb_build_object('attempt', attempts, 'at', now(), 'error', %(error)s::text,"
        " 'traceback', NULL)",
    )
    + """,
           meta
      FROM gone
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT coalesce(array_agg(id ORDER BY id), '{}') FROM gone
"""
)

# A heartbeat is fenced by the worker too: a claim given back (LEASES_RELEASE, or a Retry()
# without an error) leaves its attempt uncounted, and the job's next claim, another worker's,
# has the same attempts. A heartbeat of the worker that gave it back, sent after that (it
# waited for the connection the release used, or it holds an abandoned task's attempt until
# its loops end), extended that claim's lease. The filter on the rows found by id costs no
# other plan (the ack's fence does not compare worker_id: see JOBS_LOCK_CLAIMS).
# The last row (its id NULL) says which process the worker's row names, none if it is gone:
# another under the same name, which started about when this one did, may have taken it (see
# Worker._check_holder). It is the row the beat updates anyway: the statement costs the same.
# The rows are locked first in the order of their ids (see JOBS_ACK): updated through the list,
# they were locked in the worker's order, and a beat could deadlock with an admin cancelling
# two of its jobs in one transaction.
LEASES_EXTEND: LiteralString = """
WITH seen AS (
    UPDATE pgqueue.worker_processes SET last_seen_at = now() WHERE id = %(worker)s
    RETURNING hostname, pid, host_key, process_started
), held AS MATERIALIZED (
    SELECT j.id, j.attempts
      FROM pgqueue.active_jobs AS j
      JOIN unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS h(id, attempt)
        ON j.id = h.id AND j.attempts = h.attempt AND j.state = 'running'
       AND j.worker_id = %(worker)s
     ORDER BY j.id
       FOR NO KEY UPDATE OF j
), extended AS (
    UPDATE pgqueue.active_jobs AS j
       SET lease_expires_at = now() + make_interval(secs => %(lease)s)
      FROM held
     WHERE j.id = held.id AND j.attempts = held.attempts AND j.state = 'running'
       AND j.worker_id = %(worker)s
    RETURNING j.id, j.attempts, j.cancel_requested
)
SELECT id, attempts, cancel_requested, NULL, NULL::int, NULL, NULL::bigint FROM extended
UNION ALL
SELECT NULL, NULL, NULL, hostname, pid, host_key, process_started FROM seen
"""

# Graceful shutdown: jobs that did not finish go straight back to queued, attempt not counted,
# but for those asked to cancel meanwhile: they end cancelled, as an ack would end them (their
# ids are returned, for the worker's job_ended hooks). The
# rows are locked first, and which way each goes is read from the locked row: a cancel that
# committed while the statement waited for its row is not in the statement's snapshot, and
# tested there it sent the job neither way, leaving it running, after its worker had gone,
# until its lease expired.
LEASES_RELEASE: LiteralString = """
WITH held AS MATERIALIZED (
    SELECT j.id, j.cancel_requested
      FROM pgqueue.active_jobs AS j
      JOIN unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS h(id, attempt)
        ON j.id = h.id AND j.attempts = h.attempt AND j.state = 'running'
     ORDER BY j.id
       FOR UPDATE OF j
), released AS (
    UPDATE pgqueue.active_jobs AS j
       SET state = 'queued', attempts = j.attempts - 1, run_at = now(), started_at = NULL,
           lease_expires_at = NULL, worker_id = NULL
      FROM held
     WHERE j.id = held.id AND NOT held.cancel_requested
    RETURNING j.id, j.queue
), cancelled AS (
    DELETE FROM pgqueue.active_jobs AS j
     USING held
     WHERE j.id = held.id AND held.cancel_requested
    RETURNING j.*
), moved AS (
    INSERT INTO pgqueue.finished_jobs
        (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at,
         created_at, started_at, finished_at, worker_id, timeout, unique_key, result,
         last_error, errors, meta)
    SELECT id, queue, task, args, kwargs, 'cancelled', priority, attempts - 1, max_attempts,
           run_at, created_at, started_at, now(), worker_id, timeout, unique_key, NULL,
           'cancelled on request', errors, meta
      FROM cancelled
    ON CONFLICT (id) DO NOTHING
    RETURNING id
)
SELECT (SELECT count(*) FROM released),
       ARRAY(SELECT id FROM moved),
       (SELECT count(pg_notify('pgqueue_jobs', q.queue))
          FROM (SELECT DISTINCT queue FROM released) AS q)
"""

# The jobs leased to a worker, their leases unexpired: read after a claim whose reply was
# lost (cut off by a cancellation, or with its connection: the claim may have committed), to
# give back those it never started. Only unexpired leases: a job whose outcome the worker
# wrote can be leased to it again (a server crash lost that write) only until the lease it had
# then expires, which the worker's record of its written outcomes outlasts (see
# Worker._unknown_claims). Rare: no index. None while the worker's row names another process:
# a namesake's jobs are leased under the same name, and the worker cannot tell them from those
# of its lost claim (those wait for their leases).
LEASES_READ: LiteralString = """
SELECT id, attempts FROM pgqueue.active_jobs
 WHERE state = 'running' AND worker_id = %(worker)s AND lease_expires_at > now()
   AND NOT EXISTS (SELECT FROM pgqueue.worker_processes AS w
                    WHERE w.id = %(worker)s
                      AND (w.hostname, w.pid, w.host_key, w.process_started)
                          IS DISTINCT FROM (%(hostname)s::text, %(pid)s::int,
                                            %(host_key)s::text, %(started)s::bigint))
"""

# Expired leases, and the jobs of workers seen dead: back to queued, or to history as failed
# ("worker lost") when no attempt is left, or as cancelled ("cancelled on request", as an ack
# of a cancelled attempt says; its errors record the attempt lost) when a cancel was requested.
# SKIP LOCKED lets any number of workers sweep at once; ON CONFLICT keeps one bad row from
# wedging the batch. A rescued job keeps its run_at, so its place in line: it was runnable and
# lost its turn to someone else's crash more often than to its own. A dead worker counts only
# while its row still shows the process seen dead (id, pid, start time); the row is locked,
# then deleted, so a new process registering under the same name waits for this statement and
# never has its own jobs taken. The row stays while some of its jobs were not taken (locked, or
# past the limit): deleted, the next sweep knew nothing of that worker, and those jobs waited
# for their leases. Rows are locked in the order of their ids, as WORKERS_PRUNE
# locks them: locked in the order of the list (the plan of a small table follows it) two
# sweeps, or a sweep and a prune, that met the same rows in different orders each took one
# and waited for the other, and PostgreSQL failed one with 'deadlock detected'.
# Every worker runs this every few seconds, so its candidates come from two index-friendly
# arms: expired leases through the lease index, and dead workers' rows through a scan that a
# one-time filter skips unless a worker died. In one OR the two made every pass read the whole
# table (22 ms per 200k rows, per worker, per pass). The outer WHERE repeats the condition so
# a row changed meanwhile (a late heartbeat) is re-checked once locked.
_WORKER_LOST: LiteralString = (
    "jsonb_build_object('attempt', attempts, 'at', now(), 'error', 'worker lost',"
    " 'traceback', NULL)"
)

LEASES_RESCUE: LiteralString = (
    """
WITH dead_workers AS MATERIALIZED (
    SELECT w.id
      FROM pgqueue.worker_processes AS w
      JOIN unnest(%(dead)s::text[], %(dead_pids)s::int[], %(dead_started)s::bigint[])
           AS d(id, pid, started)
        ON w.id = d.id AND w.pid = d.pid AND w.process_started = d.started
     ORDER BY w.id
       FOR UPDATE OF w
), expired AS MATERIALIZED (
    SELECT id FROM pgqueue.active_jobs
     WHERE id = ANY(ARRAY(
           (SELECT id FROM pgqueue.active_jobs
             WHERE state = 'running' AND lease_expires_at < now()
             ORDER BY lease_expires_at
             LIMIT %(limit)s)
           UNION ALL
           (SELECT id FROM pgqueue.active_jobs
             WHERE state = 'running' AND worker_id IN (SELECT id FROM dead_workers)
               AND EXISTS (SELECT FROM dead_workers)
             LIMIT %(limit)s)))
       AND state = 'running'
       AND (lease_expires_at < now() OR worker_id IN (SELECT id FROM dead_workers))
     ORDER BY lease_expires_at
     LIMIT %(limit)s
     FOR UPDATE SKIP LOCKED
), gone AS (
    DELETE FROM pgqueue.worker_processes AS w USING dead_workers AS d
     WHERE w.id = d.id
       AND NOT EXISTS (SELECT FROM pgqueue.active_jobs AS j
                        WHERE j.state = 'running' AND j.worker_id = d.id
                          AND j.id <> ALL(ARRAY(SELECT id FROM expired)))
    RETURNING w.id
), requeued AS (
    UPDATE pgqueue.active_jobs AS j
       SET state = 'queued', worker_id = NULL, lease_expires_at = NULL,
           last_error = 'worker lost',
           errors = """  # noqa: S608 - constants only (_errors_plus)
    + _errors_plus("j.errors", _WORKER_LOST)
    + """
      FROM expired
     WHERE j.id = expired.id AND j.attempts < j.max_attempts AND NOT j.cancel_requested
    RETURNING j.id, j.queue
), dead AS (
    DELETE FROM pgqueue.active_jobs AS j
     USING expired
     WHERE j.id = expired.id AND (j.attempts >= j.max_attempts OR j.cancel_requested)
    RETURNING j.*
), moved AS (
    INSERT INTO pgqueue.finished_jobs
        (id, queue, task, args, kwargs, state, priority, attempts, max_attempts, run_at,
         created_at, started_at, finished_at, worker_id, timeout, unique_key, result,
         last_error, errors, meta)
    SELECT id, queue, task, args, kwargs,
           CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END,
           priority, attempts, max_attempts, run_at, created_at, started_at, now(), worker_id,
           timeout, unique_key, NULL,
           CASE WHEN cancel_requested THEN 'cancelled on request' ELSE 'worker lost' END,
           """
    + _errors_plus("errors", _WORKER_LOST)
    + """,
           meta
      FROM dead
    ON CONFLICT (id) DO NOTHING
    RETURNING state
)
SELECT (SELECT count(*) FROM requeued),
       (SELECT count(*) FILTER (WHERE state = 'failed') FROM moved),
       (SELECT count(*) FILTER (WHERE state = 'cancelled') FROM moved),
       (SELECT count(*) FROM gone),
       (SELECT count(pg_notify('pgqueue_jobs', q.queue))
          FROM (SELECT DISTINCT queue FROM requeued) AS q)
"""
)

_WORKERS_INSERT: LiteralString = """
INSERT INTO pgqueue.worker_processes
    (id, hostname, pid, queues, version, heartbeat_s, host_key, process_started)
VALUES (%(id)s, %(hostname)s, %(pid)s, %(queues)s::jsonb, %(version)s, %(heartbeat)s,
        %(host_key)s, %(started)s)
"""

WORKERS_REGISTER: LiteralString = (
    _WORKERS_INSERT
    + """ON CONFLICT (id) DO UPDATE
   SET hostname = EXCLUDED.hostname, pid = EXCLUDED.pid, queues = EXCLUDED.queues,
       version = EXCLUDED.version, heartbeat_s = EXCLUDED.heartbeat_s,
       host_key = EXCLUDED.host_key, process_started = EXCLUDED.process_started,
       started_at = now(), last_seen_at = now()
"""
)

# A running worker's row is put back if it is gone: pruned after ten heartbeats failed (a long
# network partition) or deleted by hand. Heartbeats only update it, so the worker went on
# unseen by `pgqueue workers` and by its neighbours' liveness checks. A row another process
# registered under the name meanwhile is left alone (the name check at start warns of that).
WORKERS_REGISTER_MISSING: LiteralString = (
    _WORKERS_INSERT
    + """ON CONFLICT (id) DO NOTHING
RETURNING true
"""
)

# The workers that share a process table (see pgqueue/_worker/_liveness.py).
WORKERS_ON_HOST: LiteralString = """
SELECT id, pid, process_started FROM pgqueue.worker_processes WHERE host_key = %(host_key)s
"""

# Who holds a worker name, and how long ago it was seen (a worker checks before taking it),
# and when, to tell whether it was seen again on a second read. A last_seen_at of 'infinity'
# (SQL can write it) counts as 9999-12-31: the subtraction failed, and so did the start of
# every worker given that name.
WORKERS_READ: LiteralString = """
SELECT hostname, pid, host_key, process_started,
       extract(epoch FROM now() - least(last_seen_at, timestamptz '9999-12-31 00:00+00'))::float8,
       heartbeat_s, extract(epoch FROM last_seen_at)::float8
  FROM pgqueue.worker_processes WHERE id = %(id)s
"""

# Only the row this process registered: another under the same name may have taken it.
WORKERS_DELETE: LiteralString = """
DELETE FROM pgqueue.worker_processes
 WHERE id = %(id)s
   AND (hostname, pid, host_key, process_started)
       IS NOT DISTINCT FROM (%(hostname)s::text, %(pid)s::int,
                             %(host_key)s::text, %(started)s::bigint)
"""

# A worker unseen for ten heartbeats is gone; its jobs are rescued by their leases anyway.
# A heartbeat counts as at most 1e10 s (see WORKERS_LIST): one that SQL set to 'Infinity' or
# 1e300, or one over 670 years, failed this statement in every worker's maintenance pass, and
# the pruning of history and the vacuum of the claim path that come after it never ran.
# The rows are locked in the order of their ids first, as LEASES_RESCUE locks them.
WORKERS_PRUNE: LiteralString = """
WITH unseen AS MATERIALIZED (
    SELECT id FROM pgqueue.worker_processes
     WHERE last_seen_at < now() - make_interval(secs => least(heartbeat_s, 1e10) * 10)
     ORDER BY id
       FOR UPDATE
)
DELETE FROM pgqueue.worker_processes AS w USING unseen WHERE w.id = unseen.id
"""

# A burst worker's look for the end, after a claim took nothing: the runnable jobs of its
# tasks that a claim could take (locked as the claims lock them, skipping what another
# transaction holds: a claim steps over those), and all of them. Rows it locks are held only
# for the statement; those another holds are skipped, not waited for.
JOBS_COUNT_RUNNABLE: LiteralString = """
SELECT (SELECT count(*) FROM (
            SELECT FROM pgqueue.active_jobs
             WHERE state = 'queued' AND queue = ANY(%(queues)s::text[]) AND run_at <= now()
               AND task = ANY(%(tasks)s::text[])
               FOR UPDATE SKIP LOCKED) AS claimable),
       (SELECT count(*) FROM pgqueue.active_jobs
         WHERE state = 'queued' AND queue = ANY(%(queues)s::text[]) AND run_at <= now()
           AND task = ANY(%(tasks)s::text[]))
"""

JOBS_COUNT_BY_STATE: LiteralString = """
SELECT state, count(*) FROM pgqueue.jobs GROUP BY state ORDER BY state
"""

LISTEN_JOBS: LiteralString = "LISTEN pgqueue_jobs"

PING: LiteralString = "SELECT 1"

# The server's own id of this session and when it started, which name it in pg_stat_activity
# (a pid alone may name another session by the time it is read again): read by the claimer
# at each connect, so that, its connection broken under a claim, it can end that claim's
# session (see BACKEND_END).
BACKEND_SELF: LiteralString = """
SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()
"""

# A claim sent on a connection that broke may still run on the server (waiting for a lock,
# say), its client gone unnoticed, and commit after the worker read which jobs are leased to
# it: those jobs then waited for their leases. Its session is ended (a role may end its own
# sessions), and the worker waits until it is gone (BACKEND_ALIVE) before that read: a claim
# committed by then is read, any other never commits. Only a session of this role, named as
# the claimer names its sessions: through a pooler, a server session passes from client to
# client (the worker does not read sessions behind one: see Db).
BACKEND_END: LiteralString = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
 WHERE pid = %(pid)s AND backend_start = %(started)s AND usename = current_user
   AND application_name = %(application)s
"""

BACKEND_ALIVE: LiteralString = """
SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = %(pid)s AND backend_start = %(started)s)
"""

# -- demo: `pgqueue demo` -----------------------------------------------------------------------
# The demo's own table lives in schema pgqueue_demo so it cannot clash with an application's.

DEMO_SCHEMA_CREATE: LiteralString = """
CREATE SCHEMA IF NOT EXISTS pgqueue_demo
"""

DEMO_ORDERS_CREATE: LiteralString = """
CREATE TABLE IF NOT EXISTS pgqueue_demo.orders (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer     text        NOT NULL,
    total_cents  integer     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
)
"""

DEMO_ORDERS_INSERT: LiteralString = """
INSERT INTO pgqueue_demo.orders (customer, total_cents) VALUES (%s, %s) RETURNING id
"""

DEMO_ORDERS_COUNT: LiteralString = """
SELECT count(*) FROM pgqueue_demo.orders WHERE id = ANY(%(ids)s::bigint[])
"""

DEMO_JOBS_COUNT: LiteralString = """
SELECT count(*) FROM pgqueue.jobs WHERE id = ANY(%(ids)s::bigint[])
"""

# A run's jobs have ids between the first and last that enqueue returned; the task filter
# keeps other producers' jobs in that range out.
DEMO_JOBS_UNFINISHED: LiteralString = """
SELECT count(*) FROM pgqueue.active_jobs
 WHERE id BETWEEN %(first)s AND %(last)s AND task = ANY(%(tasks)s::text[])
"""

DEMO_JOBS_BY_STATE: LiteralString = """
SELECT task, state, count(*) AS jobs, max(attempts) AS max_attempts, min(last_error) AS error
  FROM pgqueue.jobs
 WHERE id BETWEEN %(first)s AND %(last)s AND task = ANY(%(tasks)s::text[])
 GROUP BY task, state
 ORDER BY task, state
"""


# -- periodic tasks and unique jobs (issue 3) -----------------------------------------------

CLOCK_NOW: LiteralString = "SELECT now()"

# now() as text that casts back to the same instant: ISO 8601 in UTC, whatever the session's
# DateStyle and TimeZone (psycopg reads timestamptz in the ISO DateStyle only) and however the
# caller's connection loads timestamps (Django without USE_TZ: naive, ambiguous at a DST end).
CLOCK_NOW_TEXT: LiteralString = """
SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
"""

# A tick insert and a prune of the same schedule name exclude each other: the insert holds
# the name's lock shared, the prune exclusively, from a statement before their own until they
# commit (advisory locks (7403159, hashtext(name)); a hash collision between two names only
# makes them wait for each other). Inserts of one name never wait for each other on it.
TICKS_LOCK_SHARED: LiteralString = """
SELECT pg_advisory_xact_lock_shared(7403159, hashtext(%(name)s))
"""

# One insert statement per schedule and pass: the tick rows are the arbiter. Only ticks this
# statement inserted (ON CONFLICT DO NOTHING) get a job, so any number of schedulers running
# this at once produce one job per tick. The job id is drawn from the jobs' identity sequence
# up front so the tick row can point at its job without a second statement.
#
# A pruned tick is refused (revision 0009), whatever this caller's horizon. It runs after
# TICKS_LOCK_SHARED in the same transaction, so its snapshot is taken with the name's lock
# held: a prune of the name has either committed before it (the snapshot sees the watermark,
# at or below which ticks are refused: one primary-key look-up per statement) or waits for
# it to commit. Without the lock (earlier releases needing 0009), a tick another scheduler commits
# after this statement's snapshot and a prune deletes and commits before this statement
# reaches it was neither seen nor conflicting, and got a second job. The NOT EXISTS refuses
# a tick the snapshot holds without waiting for a concurrent insert of it (older code's
# prunes, which take no lock, also hit it: the conflict check would wait for such a prune
# and then find the row gone).
#
# Deadlocks: this transaction holds one name's lock and waits only for row locks of that
# name's ticks that another insert, already past the same lock, holds (ON CONFLICT waits for
# an uncommitted insert of the same tick; the statement inserts its ticks in ascending order,
# whatever order its caller passes them in, so two inserts cannot wait on each other in a
# cycle). A prune holds no row of a name whose lock it lacks, and takes its locks before any
# row (TICKS_PRUNE_LOCK).
#
# A schedule with overlap=False gives its jobs a unique key (%(unique_key)s, else NULL): a
# tick won while a job of the schedule is queued or running is recorded, and gets no job
# (its job id is left unused, and TICKS_UNLINK, in the same transaction, clears it from the
# tick row); it is returned with a NULL id. Of the ticks one statement wins, the oldest gets
# the job. The ORDER BY makes every tick row go in before the first
# job does: an insert waits for the key only past its tick rows, for an insert also past its
# own, which then waits for nothing (its other jobs conflict with its own key), so the key
# adds no cycle to the waits above.
#
# A schedule with coalesce=True passes %(jobless_through)s (else NULL): the ticks at or
# before it that this statement wins are recorded with no job (and draw no id), so that no
# scheduler, racing on them or later, fires them; the latest due tick is fired as any other.
TICKS_INSERT: LiteralString = """
WITH won AS (
    INSERT INTO pgqueue.periodic_ticks (name, tick, job_id)
    SELECT %(name)s, t.tick,
           CASE WHEN %(jobless_through)s::timestamptz IS NULL OR t.tick > %(jobless_through)s
                THEN nextval(pg_get_serial_sequence('pgqueue.active_jobs', 'id')) END
      FROM unnest(%(ticks)s::timestamptz[]) AS t(tick)
     WHERE t.tick > now() - make_interval(secs => %(horizon)s)
       AND t.tick > coalesce((SELECT w.pruned_through FROM pgqueue.periodic_watermarks AS w
                               WHERE w.name = %(name)s), '-infinity')
       AND NOT EXISTS (SELECT FROM pgqueue.periodic_ticks AS s
                        WHERE s.name = %(name)s AND s.tick = t.tick)
     ORDER BY t.tick
    ON CONFLICT (name, tick) DO NOTHING
    RETURNING tick, job_id,
              to_char(tick AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"') AS shown
), job AS (
    INSERT INTO pgqueue.active_jobs
        (id, queue, task, args, kwargs, priority, max_attempts, timeout, unique_key, meta)
    SELECT won.job_id, %(queue)s, %(task)s, '[]'::jsonb, %(kwargs)s::jsonb, %(priority)s,
           %(max_attempts)s, %(timeout)s, %(unique_key)s,
           %(meta)s::jsonb || jsonb_build_object('periodic', %(name)s::text, 'tick', won.shown)
      FROM won
     WHERE won.job_id IS NOT NULL
     ORDER BY won.tick
    ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
    RETURNING id
)
SELECT job.id, won.shown FROM won LEFT JOIN job ON job.id = won.job_id ORDER BY won.tick
"""

# The rows of an overlap=False schedule's ticks that got no job (TICKS_INSERT drew an id for
# each tick before the unique key refused its job) name no job: NULL, in the transaction of
# the insert, which left the drawn id there (it named no job, and read as a job deleted).
# One primary-key probe per tick; a row of another scheduler's whose job is gone is only
# made to say so too.
TICKS_UNLINK: LiteralString = """
UPDATE pgqueue.periodic_ticks AS t SET job_id = NULL
 WHERE t.name = %(name)s AND t.tick = ANY(%(ticks)s::timestamptz[]) AND t.job_id IS NOT NULL
   AND NOT EXISTS (SELECT FROM pgqueue.jobs AS j WHERE j.id = t.job_id)
"""

# The names of the tick rows, one index probe each (a loose index scan: a DISTINCT would read
# every tick), as the CTE "names", its last row NULL: for TICKS_LAST and TICKS_PRUNE_LOCK.
_TICK_NAMES: LiteralString = """
WITH RECURSIVE names (name) AS (
    (SELECT t.name FROM pgqueue.periodic_ticks AS t ORDER BY t.name LIMIT 1)
    UNION ALL
    SELECT (SELECT t.name FROM pgqueue.periodic_ticks AS t
             WHERE t.name > n.name ORDER BY t.name LIMIT 1)
      FROM names AS n
     WHERE n.name IS NOT NULL
)"""

# Ticks a scheduler never fires are left out: those after now (SQL can write them) would only
# hold a schedule's start back, and one Python cannot hold (infinite, beyond year 9999) made
# every scheduler's start fail, so that no schedule of the database fired any more.
# The names come from the primary key, one probe each (a loose index scan, as in
# TICKS_PRUNE_LOCK), and each name's latest tick from one backward probe: a GROUP BY read
# every tick, 130 ms on a million, at every scheduler's start and in `pgqueue cron list`.
TICKS_LAST: LiteralString = (
    _TICK_NAMES  # noqa: S608 - constants only (_TICK_NAMES)
    + """
SELECT n.name, l.tick
  FROM names AS n
 CROSS JOIN LATERAL (SELECT t.tick FROM pgqueue.periodic_ticks AS t
                      WHERE t.name = n.name
                        AND t.tick BETWEEN timestamptz '0001-01-02 00:00+00' AND now()
                      ORDER BY t.tick DESC LIMIT 1) AS l
 WHERE n.name IS NOT NULL
 ORDER BY n.name
"""
)

# Those after now are left out, as TICKS_LAST leaves out such ticks: only SQL writes them,
# and one near year 9999 has no next tick Python can hold, which stopped the scheduler's start.
WATERMARKS_GET: LiteralString = """
SELECT name, pruned_through FROM pgqueue.periodic_watermarks
 WHERE name = ANY(%(names)s::text[]) AND pruned_through <= now()
"""

# The names a prune may delete ticks or the watermark of (see TICKS_PRUNE), each locked
# exclusively (see TICKS_LOCK_SHARED) in
# the order of the lock key, then the name: a lock the target list takes after the sort, so
# two prunes take their common keys in one order and never wait on each other in a cycle
# (ordered by name alone, two colliding names could be taken in opposite orders). Locks come
# before this prune touches any row: it waits for inserts and prunes of a name, which never
# wait for its rows; after them, only for a watermark row a prune of code without the lock
# writes (both write them in name order).
#
# A stalled client must not hold a schedule back (settings local to the transaction, so
# behind a pooler too; the prune is then rolled back and tried again later):
# - the prune's delete is a round trip later, its names' locks held: a client that stops in
#   between (SIGSTOP, an event loop blocked by a task) held back every scheduler's inserts of
#   those names for as long as it lived. Its transaction is ended after 5 s idle instead.
# - an insert's client that stops between its two pipelined statements holds the name's lock
#   shared, and is not idle. The prune's exclusive request waited for it, and every later
#   insert of the name waited in the queue behind that request. The prune gives up after 5 s
#   (prunes that wait on purpose, for an insert or a prune in progress, wait milliseconds).
# The guard is a row of the join, so it runs before the target list takes any lock.
# At most a batch of names is locked (the LIMIT comes before the target list too): the delete
# takes a tick from each name it touches, so it cannot reach more. Each lock takes a slot of
# the server's shared lock table, sized by max_locks_per_transaction times max_connections,
# that the application's transactions share: on a default server one transaction got 12,000
# advisory locks and failed at 15,000 with "out of shared memory". Every name with an old
# tick was locked, one slot per schedule of the app (prunes of the same names exclude each
# other, so their locks did not add up). The names left over are locked by the next batches.
# The names come from the primary key, one probe each (a loose index scan), and whether a name
# has a tick to prune from its oldest and latest ticks: reading every tick and looking the
# latest up again for each old one took 4 s a statement on a million ticks, 390,000 of them old.
TICKS_PRUNE_LOCK: LiteralString = (
    """
SELECT d.name, pg_advisory_xact_lock(7403159, hashtext(d.name))
  FROM (SELECT set_config('idle_in_transaction_session_timeout', '5s', true),
               set_config('lock_timeout', '5s', true)) AS stall,
       ("""  # noqa: S608 - constants only (_TICK_NAMES)
    + _TICK_NAMES
    + """
        SELECT n.name
          FROM names AS n
          LEFT JOIN unnest(%(names)s::text[], %(keeps)s::float8[]) AS keep(name, secs)
                 ON keep.name = n.name
         CROSS JOIN LATERAL (SELECT min(t.tick) AS oldest, max(t.tick) AS latest
                               FROM pgqueue.periodic_ticks AS t
                              WHERE t.name = n.name) AS b
         WHERE n.name IS NOT NULL
           AND b.oldest < now() - make_interval(secs => coalesce(keep.secs, %(default_keep)s))
           AND (keep.name IS NULL OR b.oldest < b.latest)
        UNION
        SELECT w.name
          FROM pgqueue.periodic_watermarks AS w
         WHERE w.name <> ALL(%(names)s::text[])
           AND w.pruned_through < now() - make_interval(secs => %(forget)s)
           AND NOT EXISTS (SELECT FROM pgqueue.periodic_ticks AS t WHERE t.name = w.name)) AS d
 ORDER BY hashtext(d.name), d.name
 LIMIT %(limit)s
"""
)

# Small batches, each name's oldest first, of the names TICKS_PRUNE_LOCK locked in this
# transaction (%(locked)s): a name whose tick aged or appeared since is left for the next prune. The
# latest tick of every schedule in the code is kept (it is where catch-up starts after
# downtime); names no longer in the code go entirely once old. Each name's watermark rises
# to the latest tick deleted (GREATEST: it never goes down, whichever ticks a prune finds),
# in the same transaction as the delete, so that no insert sees the one without the other.
# SKIP LOCKED steps over ticks that a prune of code without the lock holds. Each name's
# ticks are read in primary-key order from its oldest, name after name, until a batch is
# found (the LIMIT stops the loop over the names; no ORDER BY may come above it): a prune
# reads and locks about what it deletes, however many ticks and names there are. The batch
# was the oldest of every name's batch, which read and locked a batch per name (4 to 7 s a
# pass with 1,000 names of 1,000 old ticks). A batch holds the oldest ticks of each name it
# takes from, so each watermark still has no tick left at or below it.
#
# A watermark goes with its name once nothing needs it: the name has no tick, it is not in
# the pruning code, and its mark is older than %(forget)s seconds (the longest catch_up plus
# an hour, so it refuses nothing a tick insert's horizon does not, plus 2,923 days, so that
# any schedule of another app whose ticks this code pruned, a 29 February one too, still
# resumes from it: see _resumed and FORGET_AFTER). Under the name's lock, taken before this
# statement's snapshot, a tick insert of the name has committed (NOT EXISTS sees its tick
# and keeps the mark) or waits, and then refuses by its horizon all the mark refused. The
# names `raised` writes had ticks in this snapshot, so the two never touch one row.
TICKS_PRUNE: LiteralString = """
WITH keep AS (
    SELECT * FROM unnest(%(names)s::text[], %(keeps)s::float8[]) AS k(name, secs)
), doomed AS (
    SELECT t.name, t.tick
      FROM unnest(%(locked)s::text[]) AS l(name)
      LEFT JOIN keep ON keep.name = l.name
     CROSS JOIN LATERAL (SELECT max(m.tick) AS latest FROM pgqueue.periodic_ticks AS m
                          WHERE m.name = l.name) AS b
     CROSS JOIN LATERAL (
            SELECT p.name, p.tick
              FROM pgqueue.periodic_ticks AS p
             WHERE p.name = l.name
               AND p.tick < now() - make_interval(secs => coalesce(keep.secs, %(default_keep)s))
               AND (keep.name IS NULL OR p.tick < b.latest)
             ORDER BY p.tick
             LIMIT %(limit)s
               FOR UPDATE SKIP LOCKED) AS t
     LIMIT %(limit)s
), gone AS (
    DELETE FROM pgqueue.periodic_ticks AS p
     USING doomed
     WHERE p.name = doomed.name AND p.tick = doomed.tick
    RETURNING p.name, p.tick
), raised AS (
    INSERT INTO pgqueue.periodic_watermarks AS w (name, pruned_through)
    SELECT g.name, max(g.tick) FROM gone AS g GROUP BY g.name ORDER BY g.name
    ON CONFLICT (name) DO UPDATE
       SET pruned_through = greatest(w.pruned_through, excluded.pruned_through)
), forgotten AS (
    DELETE FROM pgqueue.periodic_watermarks AS w
     USING unnest(%(locked)s::text[]) AS l(name)
     WHERE w.name = l.name
       AND w.name <> ALL(%(names)s::text[])
       AND w.pruned_through < now() - make_interval(secs => %(forget)s)
       AND NOT EXISTS (SELECT FROM pgqueue.periodic_ticks AS t WHERE t.name = w.name)
)
SELECT tick FROM gone
"""

# A unique job: a duplicate key inserts nothing and, thanks to DO NOTHING, never aborts the
# caller's transaction. The conflict target names the partial unique index's predicate.
JOBS_INSERT_UNIQUE: LiteralString = """
INSERT INTO pgqueue.active_jobs
    (queue, task, args, kwargs, priority, max_attempts, run_at, timeout, unique_key, meta)
VALUES (%s, %s, %s::jsonb, %s::jsonb, %s, %s,
        coalesce(%s::timestamptz, now() + make_interval(secs => %s)), %s, %s, %s::jsonb)
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id
"""

# Run as a statement of its own after a conflict: in READ COMMITTED it takes a new snapshot,
# so it sees the winner that the insert waited for.
JOBS_FIND_UNIQUE: LiteralString = """
SELECT id FROM pgqueue.active_jobs WHERE unique_key = %(key)s
"""

# enqueue_many with unique keys (one per job, or NULL; none twice): the jobs go in sorted by
# key, so that two batches with keys in common take them in one order and the later waits
# for the earlier instead of deadlocking. Their ids are taken first, in input order (a job's
# rank among the ids taken is its place in the batch), so that the batch still runs in input
# order. A key an active job holds inserts nothing, as JOBS_INSERT_UNIQUE.
JOBS_INSERT_MANY_UNIQUE: LiteralString = """
WITH ids AS MATERIALIZED (
    SELECT row_number() OVER (ORDER BY s.id) AS n, s.id
      FROM (SELECT nextval((SELECT pg_get_serial_sequence('pgqueue.active_jobs', 'id'))::regclass)
              FROM generate_series(1, cardinality(%(args)s::text[]))) AS s(id)
)
INSERT INTO pgqueue.active_jobs
    (id, queue, task, args, kwargs, priority, max_attempts, run_at, timeout, unique_key, meta)
SELECT i.id, %(queue)s, %(task)s, u.a::jsonb, u.k::jsonb, %(priority)s, %(max_attempts)s,
       coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s)),
       %(timeout)s, u.key, %(meta)s::jsonb
  FROM unnest(%(args)s::text[], %(kwargs)s::text[], %(keys)s::text[])
       WITH ORDINALITY AS u(a, k, key, n)
  JOIN ids AS i ON i.n = u.n
 ORDER BY u.key COLLATE "C" NULLS FIRST, u.n
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL DO NOTHING
RETURNING id, unique_key
"""

# The holders of the keys JOBS_INSERT_MANY_UNIQUE found held, in a statement of its own for
# the reason JOBS_FIND_UNIQUE is.
JOBS_FIND_UNIQUE_MANY: LiteralString = """
SELECT unique_key, id FROM pgqueue.active_jobs WHERE unique_key = ANY(%(keys)s::text[])
"""

# Around a batch of unique jobs in the caller's transaction: a batch that meets a held key
# with on_conflict="raise" (or gives up on a contended one) takes back the jobs it inserted,
# and leaves the transaction usable; a round that found a key freed is taken back and the
# batch inserted again, in key order.
SAVEPOINT_SET: LiteralString = "SAVEPOINT pgqueue_enqueue_many"

SAVEPOINT_ROLLBACK: LiteralString = "ROLLBACK TO SAVEPOINT pgqueue_enqueue_many"

SAVEPOINT_RELEASE: LiteralString = "RELEASE SAVEPOINT pgqueue_enqueue_many"

# A batch interrupted between two statements (KeyboardInterrupt, a cancelled task) takes
# itself back: two statements in one simple query, so one round trip.
SAVEPOINT_ABANDON: LiteralString = (
    "ROLLBACK TO SAVEPOINT pgqueue_enqueue_many; RELEASE SAVEPOINT pgqueue_enqueue_many"
)


# -- Cancellation (issue 4) --------------------------------------------------------------------

# A queued job moves to history as cancelled at once; a running one is flagged, and its worker
# is hinted on pgqueue_cancel (payload: worker id) to send a heartbeat now. The heartbeat reads
# cancel_requested from the row: the notification itself changes nothing. The logic is the SQL
# function pgqueue.cancel() (0008_zz_functions.sql), shared with psql and other languages; its
# row lock makes a claim committing meanwhile finish first. Finished or unknown jobs: NULL.
JOBS_CANCEL: LiteralString = """
SELECT CASE WHEN r IN ('cancelled', 'requested') THEN r END FROM pgqueue.cancel(%(id)s) AS r
"""

LISTEN_CANCEL: LiteralString = "LISTEN pgqueue_cancel"


# -- issue 6: integrations (Django admin actions, django.tasks results, embedded migrations,
# -- pgqueue.testing). Kept together at the end of the file to ease merging.


# Failed or cancelled jobs go back to the queue under the same id with a fresh budget of
# attempts, their error history kept, through the SQL function pgqueue.retry()
# (0008_zz_functions.sql). A job whose unique key is held by an active job stays where it is.
# The function scan calls pgqueue.retry() in the array's order, which jobs_retry sorts: rows
# are locked in id order, as JOBS_RETRY_FAILED locks them, so the two cannot deadlock.
JOBS_RETRY: LiteralString = """
SELECT u.id FROM unnest(%(ids)s::bigint[]) WITH ORDINALITY AS u(id, n)
 WHERE pgqueue.retry(u.id)
 ORDER BY u.n
"""

# Installing the schema from another migration tool (Django, a user's alembic history): the
# same lock, schema and version table as pgqueue's own alembic environment creates.
SCHEMA_LOCK: LiteralString = "SELECT pg_advisory_xact_lock(7403158823390528)"

# `pgqueue migrate` (and its --sql) looks for its client every second while a statement runs
# or waits: one killed while waiting for a table's lock (behind a long transaction) left its
# backend waiting on, the migration lock held, and every claim, ack and enqueue queued behind
# its pending ACCESS EXCLUSIVE request, until that transaction ended. Without the setting
# (PostgreSQL 13, a platform without the check) it runs as before.
SCHEMA_CLIENT_CHECK: LiteralString = """
DO $$
BEGIN
    PERFORM set_config('client_connection_check_interval', '1s', true);
EXCEPTION WHEN undefined_object OR invalid_parameter_value THEN
    NULL;
END
$$"""

# Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
# schema exists, which the owner of a schema a DBA made for it may not have.
SCHEMA_CREATE: LiteralString = """
DO $$
BEGIN
    IF to_regnamespace('pgqueue') IS NULL THEN
        CREATE SCHEMA pgqueue;
    END IF;
END
$$
"""

# First in the SQL of `pgqueue migrate --sql --from REVISION`, printed to be run later: that
# SQL upgrades a schema at REVISION only (on another, alembic's UPDATE of the version matches
# no row, and the revisions in between would be skipped). Formatted with the revision as a
# literal (sql.Literal): there is no parameter to bind in printed SQL.
SCHEMA_REVISION_ASSERT: LiteralString = """
DO $$
DECLARE
    installed text;
BEGIN
    -- A database without the schema (the SQL run on a new one) has no such table: "none".
    IF to_regclass('pgqueue.alembic_version') IS NOT NULL THEN
        SELECT version_num INTO installed FROM pgqueue.alembic_version;
    END IF;
    IF installed IS DISTINCT FROM {revision} THEN
        RAISE EXCEPTION USING MESSAGE = 'pgqueue: this SQL upgrades a schema at revision '
            || {revision} || ', this database''s is ' || coalesce(installed, 'none')
            || ' (`pgqueue migrate --check` names it); nothing was changed';
    END IF;
END
$$
"""

SCHEMA_VERSION_TABLE_CREATE: LiteralString = """
CREATE TABLE IF NOT EXISTS pgqueue.alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
)
"""

SCHEMA_REVISION_CLEAR: LiteralString = "DELETE FROM pgqueue.alembic_version"

SCHEMA_REVISION_INSERT: LiteralString = """
INSERT INTO pgqueue.alembic_version (version_num) VALUES (%(revision)s)
"""

# pgqueue.testing: what is waiting, and making scheduled jobs runnable for drain().
JOBS_LIST_QUEUED: LiteralString = """
SELECT id, queue, args::text, kwargs::text FROM pgqueue.active_jobs
 WHERE task = %(task)s AND state = 'queued'
 ORDER BY id
"""

JOBS_QUEUES_WAITING: LiteralString = """
SELECT DISTINCT queue FROM pgqueue.active_jobs
 WHERE state = 'queued' AND task = ANY(%(tasks)s::text[])
   AND (NOT %(due)s OR run_at <= now())
 ORDER BY queue
"""

# Every queue when queues is NULL.
JOBS_RUN_NOW: LiteralString = """
UPDATE pgqueue.active_jobs SET run_at = now()
 WHERE state = 'queued' AND run_at > now() AND task = ANY(%(tasks)s::text[])
   AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
"""

# One drain round at a time per database: two drains of two apps, each holding the other's
# jobs (JOBS_HOLD_OTHERS), would each wait for jobs the other holds, and neither would end.
DRAINS_LOCK: LiteralString = "SELECT pg_advisory_xact_lock(7403160, 0)"

# How long a drain statement may wait for a job row another transaction holds, from now to
# the end of the transaction: a claim holds its rows for milliseconds, a test's own open
# transaction forever.
LOCKS_WAIT_AT_MOST: LiteralString = "SELECT set_config('lock_timeout', %(wait)s, true)"

# The queued jobs of tasks that a drain round's worker would claim, each waited for while
# another transaction holds it: run in a transaction of its own, so that the locks are released
# before the worker claims the rows. FOR NO KEY UPDATE waits for every lock but FOR KEY SHARE,
# which is another drain's hold (JOBS_HOLD_OTHERS, waited for on DRAINS_LOCK instead): FOR KEY
# SHARE waited for no plain UPDATE of a job (nor FOR SHARE), and so a job the test's open
# transaction updated was stepped over by every claim, and left undrained.
JOBS_PROBE: LiteralString = """
SELECT count(*) FROM (
    SELECT FROM pgqueue.active_jobs
     WHERE state = 'queued' AND task = ANY(%(tasks)s::text[]) AND queue = ANY(%(queues)s::text[])
       FOR NO KEY UPDATE
) AS probed
"""

# The other sessions on this database in an open transaction that holds a lock on the jobs
# table (a row lock comes with one), oldest transaction first.
LOCKS_HOLDERS: LiteralString = """
SELECT a.pid, a.application_name, a.state, left(a.query, 200)
  FROM pg_stat_activity AS a
 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
   AND a.xact_start IS NOT NULL
   AND EXISTS (SELECT FROM pg_locks AS l
                WHERE l.pid = a.pid AND l.granted
                  AND l.relation = 'pgqueue.active_jobs'::regclass)
 ORDER BY a.xact_start
"""

# The other sessions on this database idle in a transaction that has written to the jobs
# table (enqueued, say) and not ended: jobs a drain cannot see.
LOCKS_WRITERS_IDLE: LiteralString = """
SELECT a.pid, a.application_name, a.state, left(a.query, 200)
  FROM pg_stat_activity AS a
 WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
   AND a.state IN ('idle in transaction', 'idle in transaction (aborted)')
   AND EXISTS (SELECT FROM pg_locks AS l
                WHERE l.pid = a.pid AND l.granted AND l.mode = 'RowExclusiveLock'
                  AND l.relation = 'pgqueue.active_jobs'::regclass)
 ORDER BY a.xact_start
"""

# FOR KEY SHARE conflicts with the claims' FOR UPDATE SKIP LOCKED, so every claim steps over
# these rows until the transaction ends, while updates that leave the key alone still go
# through (a cancel of a queued job moves its row to history: that one waits).
JOBS_HOLD_OTHERS: LiteralString = """
SELECT count(*) FROM (
    SELECT FROM pgqueue.active_jobs
     WHERE state = 'queued' AND task <> ALL(%(tasks)s::text[])
       FOR KEY SHARE
) AS held
"""


# -- operations: inspecting and steering jobs, retention, metrics (issue 5) ----------------------

# JSON columns travel as text and are decoded by the store, so the result is the same whatever
# loaders the caller's connection has (Django's connection loads jsonb as text).
# A timestamp Python cannot hold (infinite, or beyond year 9999: SQL can write such a
# created_at, started_at, finished_at, lease_expires_at, or a finished run_at) reads as the
# nearest bound any session's time zone can load, 0001-01-02 or 9999-12-31 UTC: psycopg
# refused the row, and with it every listing that held the job.
_JOB_COLUMNS: LiteralString = """
SELECT id, task, queue, state, args::text, kwargs::text, priority, attempts, max_attempts,
       CASE WHEN run_at < timestamptz '0001-01-02 00:00+00' THEN timestamptz '0001-01-02 00:00+00'
            WHEN run_at > timestamptz '9999-12-31 00:00+00' THEN timestamptz '9999-12-31 00:00+00'
            ELSE run_at END,
       CASE WHEN created_at < timestamptz '0001-01-02 00:00+00'
                THEN timestamptz '0001-01-02 00:00+00'
            WHEN created_at > timestamptz '9999-12-31 00:00+00'
                THEN timestamptz '9999-12-31 00:00+00'
            ELSE created_at END,
       CASE WHEN started_at < timestamptz '0001-01-02 00:00+00'
                THEN timestamptz '0001-01-02 00:00+00'
            WHEN started_at > timestamptz '9999-12-31 00:00+00'
                THEN timestamptz '9999-12-31 00:00+00'
            ELSE started_at END,
       CASE WHEN finished_at < timestamptz '0001-01-02 00:00+00'
                THEN timestamptz '0001-01-02 00:00+00'
            WHEN finished_at > timestamptz '9999-12-31 00:00+00'
                THEN timestamptz '9999-12-31 00:00+00'
            ELSE finished_at END,
       result::text, last_error, errors::text, unique_key, meta::text, worker_id,
       CASE WHEN lease_expires_at < timestamptz '0001-01-02 00:00+00'
                THEN timestamptz '0001-01-02 00:00+00'
            WHEN lease_expires_at > timestamptz '9999-12-31 00:00+00'
                THEN timestamptz '9999-12-31 00:00+00'
            ELSE lease_expires_at END,
       cancel_requested
  FROM pgqueue.jobs
"""

JOBS_READ: LiteralString = (
    _JOB_COLUMNS
    + """ WHERE id = %(id)s
"""
)

# The jobs a process's waiters wait for, read in one statement (pgqueue/_wait_hub.py): ids
# unknown or pruned have no row.
JOBS_READ_MANY: LiteralString = (
    _JOB_COLUMNS
    + """ WHERE id = ANY(%(ids)s::bigint[])
"""
)

# Newest first; each filter is skipped when NULL. Running jobs are read on the lease index (a
# running row always has a lease: active_jobs_lease_check): they are the oldest of a backlog,
# and newest first, "state = 'running'" alone walked all of it (8.7 s behind 3.4 million).
JOBS_LIST: LiteralString = (
    _JOB_COLUMNS
    + """ WHERE (%(state)s::text IS NULL OR state = %(state)s)
   AND (%(state)s::text IS DISTINCT FROM 'running' OR lease_expires_at IS NOT NULL)
   AND (%(queue)s::text IS NULL OR queue = %(queue)s)
   AND (%(task)s::text IS NULL OR task = %(task)s)
 ORDER BY id DESC
 LIMIT %(limit)s
"""
)

# The ids are read first so the function's deletes never race the scan that found them, and
# locked: pgqueue.retry() takes cancelled jobs too, and a job retried and then cancelled by
# others since this statement's snapshot (while it waited for another row, say) was requeued.
# A row locked is still failed; one deleted since the snapshot (retried or pruned) is left.
# A batch: the %(limit)s (NULL: all) failed jobs after id %(after)s, in id order, read on the
# primary key from there, so that the batches of one run read the history once between them
# and a run stopped between two continues where it stopped when run again. Returns how many
# were requeued and the last id looked at (NULL: none was left).
JOBS_RETRY_FAILED: LiteralString = """
WITH picked AS MATERIALIZED (
    SELECT id FROM pgqueue.finished_jobs
     WHERE state = 'failed' AND (%(task)s::text IS NULL OR task = %(task)s)
       AND id > %(after)s
     ORDER BY id
     LIMIT %(limit)s
       FOR UPDATE
)
SELECT count(*) FILTER (WHERE pgqueue.retry(id)), max(id) FROM picked
"""

# What JOBS_RETRY_FAILED's batches would requeue now: the failed jobs (of %(task)s) whose
# unique key no active job holds, one per key (pgqueue.retry() leaves the others failed).
JOBS_RETRY_FAILED_COUNT: LiteralString = """
SELECT count(*) FILTER (WHERE f.unique_key IS NULL) + count(DISTINCT f.unique_key)
  FROM pgqueue.finished_jobs AS f
 WHERE f.state = 'failed' AND (%(task)s::text IS NULL OR f.task = %(task)s)
   AND NOT EXISTS (SELECT 1 FROM pgqueue.active_jobs AS a WHERE a.unique_key = f.unique_key)
"""

JOBS_CANCEL_CALL: LiteralString = """
SELECT pgqueue.cancel(%(id)s)
"""

# Retention: a bounded batch per state, oldest first, on the (state, finished_at) index.
# It only ever touches finished_jobs, so it cannot block the claim path; SKIP LOCKED lets
# several workers prune at once. Ages count back from %(as_of)s, or from now() when NULL: the
# batches of one prune share the instant it began, else jobs reaching the age between two of
# them keep it going for as long as workers finish jobs. Each state's scan starts at %(after)s,
# the last finished_at the batch before deleted (NULL: from the oldest), and the statement
# returns it per state, as text that casts back to the same instant (see CLOCK_NOW_TEXT; with
# its era, as SQL can write a finished_at BC, which without it read as AD and skipped on): read
# from the oldest, each batch stepped over the index entries of every job the batches before
# had deleted (until a vacuum), 10,000 pages per batch by the end of 1.9 million jobs.
JOBS_PRUNE: LiteralString = """
WITH doomed AS MATERIALIZED (
    SELECT r.state, f.id, f.finished_at
      FROM unnest(%(states)s::text[], %(ages)s::float8[], %(after)s::timestamptz[])
           AS r(state, age, after)
      CROSS JOIN LATERAL (
          SELECT id, finished_at FROM pgqueue.finished_jobs
           WHERE state = r.state
             AND finished_at >= coalesce(r.after, '-infinity')
             AND finished_at < coalesce(%(as_of)s::timestamptz, now())
                               - make_interval(secs => r.age)
           ORDER BY finished_at
           LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED
      ) AS f
), gone AS (
    DELETE FROM pgqueue.finished_jobs AS j USING doomed WHERE j.id = doomed.id RETURNING 1
)
SELECT state, count(*),
       to_char(max(finished_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z" BC')
  FROM doomed
 GROUP BY state
"""

# What JOBS_PRUNE would delete now, per state, on the same (state, finished_at) index.
JOBS_PRUNE_COUNT: LiteralString = """
SELECT r.state,
       (SELECT count(*) FROM pgqueue.finished_jobs
         WHERE state = r.state AND finished_at < now() - make_interval(secs => r.age))
  FROM unnest(%(states)s::text[], %(ages)s::float8[]) AS r(state, age)
"""

QUEUES_STATS: LiteralString = """
SELECT queue, queued, scheduled, running, succeeded, failed, cancelled,
       extract(epoch FROM oldest_runnable_age)::float8, finished_per_minute
  FROM pgqueue.queue_stats
 ORDER BY queue
"""

# QUEUES_STATS without reading the whole history: the active jobs counted exactly, as the view
# pgqueue.queue_stats counts them (a small table), the jobs finished in the last five minutes on
# the (state, finished_at) index, and the finished jobs per state estimated from %(percent)s of
# the history's pages (100: all of them, exactly), the same pages each run while the table does
# not grow (REPEATABLE), so that `stats --watch` does not flicker. The last column says whether
# the counts are estimates. Changing the view itself would take a migration.
# The failed jobs, which an operator looks for, are counted on that index, newest first: exactly
# when there are at most %(failed_cap)s, so that a queue with a few is neither left out nor
# shown ~0; when there are more, estimated as the others, but never below the count of those
# read (a queue among the newest failures shows them). Counting them all on the index would
# read as many heap rows as there are, and past a tenth of the history the planner reads all.
QUEUES_STATS_SAMPLED: LiteralString = """
WITH active AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'queued') AS queued,
           count(*) FILTER (WHERE state = 'queued' AND run_at > now()) AS scheduled,
           count(*) FILTER (WHERE state = 'running') AS running,
           min(run_at) FILTER (WHERE state = 'queued' AND run_at <= now()) AS oldest_runnable
      FROM pgqueue.active_jobs
     GROUP BY queue
), sampled AS (
    SELECT queue,
           count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
           count(*) FILTER (WHERE state = 'failed') AS failed,
           count(*) FILTER (WHERE state = 'cancelled') AS cancelled
      FROM pgqueue.finished_jobs TABLESAMPLE SYSTEM (%(percent)s::float8) REPEATABLE (0)
     GROUP BY queue
), failed_newest AS (
    SELECT queue
      FROM pgqueue.finished_jobs
     WHERE state = 'failed'
     ORDER BY finished_at DESC
     LIMIT %(failed_cap)s::bigint + 1
), failed AS (
    SELECT queue, count(*) AS failed, sum(count(*)) OVER () <= %(failed_cap)s AS exact
      FROM failed_newest
     GROUP BY queue
), recent AS (
    SELECT queue, count(*) AS recent
      FROM pgqueue.finished_jobs
     WHERE state IN ('succeeded', 'failed', 'cancelled')
       AND finished_at > now() - interval '5 minutes'
     GROUP BY queue
), queues AS (
    SELECT queue FROM active UNION SELECT queue FROM sampled UNION SELECT queue FROM failed
    UNION SELECT queue FROM recent
)
SELECT q.queue, coalesce(a.queued, 0), coalesce(a.scheduled, 0), coalesce(a.running, 0),
       round(coalesce(s.succeeded, 0) * 100 / %(percent)s::float8)::bigint,
       CASE WHEN f.exact THEN f.failed
            ELSE greatest(f.failed, round(coalesce(s.failed, 0) * 100 / %(percent)s::float8))
       END::bigint,
       round(coalesce(s.cancelled, 0) * 100 / %(percent)s::float8)::bigint,
       extract(epoch FROM now() - a.oldest_runnable)::float8,
       round(coalesce(r.recent, 0) / 5.0, 1)::float8,
       %(percent)s::float8 < 100
  FROM queues AS q
  LEFT JOIN active AS a ON a.queue = q.queue
  LEFT JOIN sampled AS s ON s.queue = q.queue
  LEFT JOIN failed AS f ON f.queue = q.queue
  LEFT JOIN recent AS r ON r.queue = q.queue
 ORDER BY q.queue
"""

# The history's size in pages now (the file's size: pg_class.relpages waits for a VACUUM).
JOBS_FINISHED_PAGES: LiteralString = """
SELECT pg_relation_size('pgqueue.finished_jobs') / current_setting('block_size')::bigint
"""

# Runnable jobs per queue, counted on the claim index and capped, so a metrics scrape stays
# cheap however deep the backlog.
QUEUES_DEPTH: LiteralString = """
SELECT w.queue,
       (SELECT count(*) FROM (
            SELECT 1 FROM pgqueue.active_jobs AS a
             WHERE a.state = 'queued' AND a.queue = w.queue AND a.run_at <= now()
             LIMIT %(cap)s) AS s)
  FROM unnest(%(queues)s::text[]) AS w(queue)
"""

# The rows of the view pgqueue.workers, read from its tables with what SQL can write to
# worker_processes bounded: through the view, one heartbeat_s past what an interval holds
# ('Infinity', 1e300) or one infinite last_seen_at failed the listing of every worker, and so
# `pgqueue workers` and `pgqueue healthcheck --worker`. A heartbeat counts as at most 1e10 s
# (317 years; pgqueue's own are shorter than the lease), and a timestamp Python cannot hold
# reads as the nearest bound any time zone loads (see _JOB_COLUMNS). Running jobs are counted on
# the lease index (a running row always has a lease: active_jobs_lease_check): through the
# view's "state = 'running'" alone, the count scanned all of active_jobs, 3.9 s of the health
# check's 4 s behind a backlog of 3.4 million queued jobs.
WORKERS_LIST: LiteralString = """
SELECT w.id, w.hostname, w.pid, w.queues::text, w.version,
       CASE WHEN w.started_at < timestamptz '0001-01-02 00:00+00'
                THEN timestamptz '0001-01-02 00:00+00'
            WHEN w.started_at > timestamptz '9999-12-31 00:00+00'
                THEN timestamptz '9999-12-31 00:00+00'
            ELSE w.started_at END,
       least(w.last_seen_at, timestamptz '9999-12-31 00:00+00'),
       extract(epoch FROM now() - least(w.last_seen_at, timestamptz '9999-12-31 00:00+00'))::float8,
       coalesce(r.running, 0)
  FROM pgqueue.worker_processes AS w
  LEFT JOIN (
      SELECT worker_id, count(*) AS running
        FROM pgqueue.active_jobs
       WHERE state = 'running' AND lease_expires_at IS NOT NULL
       GROUP BY worker_id
  ) AS r ON r.worker_id = w.id
 WHERE w.last_seen_at >= now() - make_interval(secs => least(w.heartbeat_s, 1e10) * 3)
   AND (%(id)s::text IS NULL OR w.id = %(id)s)
 ORDER BY w.id
"""

# The planner's estimate of active rows (queued + running): free, and meaningful beyond the cap.
JOBS_ESTIMATE_ACTIVE: LiteralString = """
SELECT greatest(reltuples, 0)::bigint FROM pg_class WHERE oid = 'pgqueue.active_jobs'::regclass
"""

# A waiter first holds the shared advisory locks (7403158, 0..7) for as long as its connection
# lives: the ack trigger notifies only while one of them is held (sql/0003_zz_functions.sql).
# Two statements in one simple query: the locks are held before LISTEN, LISTEN before the read.
LISTEN_FINISHED: LiteralString = """
SELECT count(pg_advisory_lock_shared(7403158, s)) FROM generate_series(0, 7) AS s;
LISTEN pgqueue_finished
"""

# -- bulk enqueue (issue 7) -------------------------------------------------------------------

# An enqueue_many a user's BEFORE INSERT trigger left short takes back the jobs it inserted
# (its error path only): they are new in this transaction, so no worker has seen them.
JOBS_DELETE_NEW: LiteralString = """
DELETE FROM pgqueue.active_jobs WHERE id = ANY(%s::bigint[])
"""

# Big enqueue_many batches are loaded with COPY; their ids are taken from the identity
# sequence first, so they come back in input order. The sequence is looked up once (a
# per-row lookup cost ten times the nextval calls), and the ids travel back as a range
# unless another session's inserts interleaved with ours.
JOBS_IDS_RESERVE: LiteralString = """
SELECT min(v), max(v),
       CASE WHEN max(v) - min(v) + 1 = count(*) THEN NULL ELSE array_agg(v ORDER BY v) END
  FROM (SELECT nextval((SELECT pg_get_serial_sequence('pgqueue.active_jobs', 'id'))::regclass)
          FROM generate_series(1, %s)) AS s(v)
"""

RUN_AT_AFTER: LiteralString = """
SELECT coalesce(%s::timestamptz, now() + make_interval(secs => %s))
"""

# The statement-level trigger still sends one NOTIFY for the whole COPY.
JOBS_COPY: LiteralString = """
COPY pgqueue.active_jobs
    (id, args, kwargs, queue, task, priority, max_attempts, run_at, timeout, meta)
FROM STDIN
"""

# For this transaction only (SET LOCAL, which a pooler in transaction mode keeps to it): how
# long a statement may wait for a lock, and run, in milliseconds.
TIMEOUTS_SET: LiteralString = """
SELECT set_config('lock_timeout', %(lock)s, %(local)s),
       set_config('statement_timeout', %(run)s, %(local)s)
"""

# -- worker sessions (issue 7) ----------------------------------------------------------------

# A worker's own writes need not wait for the WAL flush (see docs/performance.md).
SESSION_ASYNC_COMMIT: LiteralString = "SET synchronous_commit = off"

# Claims must wait for the WAL flush (see Worker), whatever default the database or the role
# sets: 'off' there is raised to 'local' for this session. Any other value already waits for
# the local flush, and a stricter one (remote_apply, say) is the DBA's to keep.
SESSION_DURABLE_COMMIT: LiteralString = """
SELECT set_config('synchronous_commit', 'local', false)
 WHERE current_setting('synchronous_commit') = 'off'
"""

SESSION_COMMIT_SETTING: LiteralString = "SELECT current_setting('synchronous_commit')"

# Timestamps as psycopg reads them (see iso_dates). 'ISO' alone keeps the session's day/month
# order, which only input uses; PgBouncer keeps DateStyle per client, even in transaction mode.
SESSION_ISO_DATES: LiteralString = "SET DateStyle = ISO"

# -- claim-path hygiene (issue 7) -------------------------------------------------------------

# The third column is the seconds since any vacuum of the table (a worker's or autovacuum's)
# last finished; infinity if none has.
ACTIVE_DEAD_TUPLES: LiteralString = """
SELECT coalesce(max(n_dead_tup), 0), coalesce(max(n_live_tup), 0),
       coalesce(extract(epoch FROM now() - max(greatest(last_vacuum, last_autovacuum))),
                'infinity')::float8
  FROM pg_stat_user_tables
 WHERE relid = 'pgqueue.active_jobs'::regclass
"""

# SKIP_LOCKED: when another worker (or autovacuum) is already at it, skip instead of waiting.
ACTIVE_VACUUM: LiteralString = "VACUUM (SKIP_LOCKED) pgqueue.active_jobs"

# VACUUM skips, with a warning only its session sees, a table whose owner (or database's owner)
# the role is not, nor has the MAINTAIN privilege on (PostgreSQL 17+): pgqueue_worker's case.
ACTIVE_VACUUM_PERMITTED: LiteralString = """
SELECT pg_has_role(c.relowner, 'USAGE') OR pg_has_role(d.datdba, 'USAGE')
       OR CASE WHEN current_setting('server_version_num')::int >= 170000
               THEN has_table_privilege(c.oid, 'MAINTAIN') ELSE false END
  FROM pg_class AS c, pg_database AS d
 WHERE c.oid = 'pgqueue.active_jobs'::regclass AND d.datname = current_database()
"""

# What keeps VACUUM (and index scans marking entries dead) from removing the row versions
# claims and acks leave behind in this database, one row per holder:
# - open transactions: any that holds an xid, in any database of the server, and snapshots
#   held in this one (PostgreSQL 14+ computes the horizon of a database's tables from its own
#   backends' snapshots); autovacuum and walsenders are left out;
# - prepared transactions, in any database: each holds an xid;
# - replication slots, and the walsenders of standbys connected without one, whose xmin (fed
#   back by hot_standby_feedback) is older than every transaction running here: an xmin no
#   older only echoes one of those, and an idle standby's is that of the next transaction,
#   which holds nothing back. A slot's catalog_xmin holds back only the catalogs, and a
#   logical walsender (connected to a database) holds its horizon through its slot.
# Slots and standbys keep no start time: their xmin and its age in transactions stand in.
# Other roles' sessions are visible only with pg_read_all_stats.
HORIZON_HOLDERS: LiteralString = """
WITH running AS (SELECT age(pg_snapshot_xmin(pg_current_snapshot())::xid) AS age)
SELECT 'transaction' AS kind, pid, NULL AS name, datname, usename, application_name,
       host(client_addr), state, xact_start AS started_at,
       extract(epoch FROM now() - xact_start)::float8, NULL::bigint, NULL::integer AS xmin_age,
       backend_xid IS NOT NULL, now()
  FROM pg_stat_activity
 WHERE pid <> pg_backend_pid()
   AND backend_type = 'client backend'
   AND xact_start < now() - make_interval(secs => %(older_than)s)
   AND (backend_xid IS NOT NULL
        OR (backend_xmin IS NOT NULL AND datname = current_database()))
UNION ALL
SELECT 'prepared', NULL, gid, database, owner, NULL, NULL, NULL, prepared,
       extract(epoch FROM now() - prepared)::float8, NULL, NULL, true, now()
  FROM pg_prepared_xacts
 WHERE prepared < now() - make_interval(secs => %(older_than)s)
UNION ALL
SELECT 'slot', s.active_pid, s.slot_name, s.database, NULL, a.application_name,
       host(a.client_addr), NULL, NULL, NULL, s.xmin::text::bigint, age(s.xmin), true, now()
  FROM pg_replication_slots AS s
  LEFT JOIN pg_stat_activity AS a ON a.pid = s.active_pid
 WHERE age(s.xmin) > (SELECT age FROM running)
UNION ALL
SELECT 'standby', pid, NULL, NULL, usename, application_name, host(client_addr), NULL, NULL,
       NULL, backend_xmin::text::bigint, age(backend_xmin), true, now()
  FROM pg_stat_activity
 WHERE backend_type = 'walsender'
   AND datname IS NULL
   AND age(backend_xmin) > (SELECT age FROM running)
 ORDER BY started_at, xmin_age DESC
"""
