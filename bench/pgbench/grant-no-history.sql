-- What a grant would cost without its lease_grants row and token guard: the
-- lease row's UPDATE alone. Not something lockmgr does; a bound on what
-- leaving the history out could save.
\set r random(1, 1000)
UPDATE leases SET holder = 'vm', token = nextval('fencing_tokens'), lease_id = gen_random_uuid(),
    acquired_at = clock_timestamp(), expires_at = clock_timestamp() + interval '1 ms', ttl_ms = 1
WHERE resource = 'bench:' || :r AND expires_at <= now()
RETURNING token;
