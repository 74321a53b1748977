-- Revision 0002: a worker records which process namespace it runs in (host_key: the kernel's
-- boot id and the pid namespace) and when its process started, so that another worker in the
-- same namespace can tell at once that it died (its pid is gone or belongs to a newer process)
-- and rescue its jobs without waiting for their leases. NULL where the platform cannot tell.
ALTER TABLE pgqueue.worker_processes
    ADD COLUMN host_key        text,
    ADD COLUMN process_started bigint;
