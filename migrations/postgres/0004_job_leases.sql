-- Leases: a running job belongs to the worker that claimed it (lease_owner) until
-- lease_expires_ms (milliseconds since 1970 on the database's clock); the worker's heartbeat
-- pushes that forward, and any host re-queues a running job whose lease has run out.

ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_expires_ms BIGINT;
CREATE INDEX jobs_lease ON jobs (status, lease_expires_ms);
