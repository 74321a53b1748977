-- Revision 0007: which code this schema serves. A worker checks the schema's revision at
-- start. Before 0007 it refused any revision but its own, so during a rolling deploy a worker
-- still on the old code that restarted after the migration (a crash, a scale-up) could not
-- start, though nothing it does had changed. pgqueue.compatible_since() names the oldest
-- revision code may need and still run on this schema: code that finds the schema newer than
-- itself starts when the revision it needs is not older than that, and refuses otherwise.
-- A later revision that keeps older code working leaves the function as it is; one that
-- breaks older code replaces it with its own revision. Code before 0007 does not read it.
CREATE FUNCTION pgqueue.compatible_since() RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$ SELECT '0007'::text $$;
