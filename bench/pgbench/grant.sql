-- lockmgr's grant alone (a takeover of a released lease; TTL 1 ms so that
-- the next try finds it run out): one statement, one flushed commit.
\set r random(1, 1000)
SELECT granted, token FROM lockmgr_try_acquire('bench:' || :r, 'vm', gen_random_uuid(), 1, NULL);
