-- lockbench's commit-loop baseline: one single-row upsert, committed
-- synchronously.
\set r random(1, 100000)
INSERT INTO commit_loop VALUES (:r, 1) ON CONFLICT (id) DO UPDATE SET n = commit_loop.n + 1;
