package locks

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bsm/redislock"
	"github.com/redis/go-redis/v9"
)

// Redislock is github.com/bsm/redislock on a local redis-server. It has no
// way to wake a waiter, so a waiter polls; 1 ms is the shortest interval a
// user would pick and the most favourable to its hand-off latency.
var Redislock = Impl{
	Name:  "redislock",
	Notes: "bsm/redislock with go-redis v9, 30 s TTL, RetryStrategy LinearBackoff(1ms): a waiter polls every millisecond",
	Open:  openRedislock,
}

const redisPoll = time.Millisecond

type redisLocker struct {
	rdb    *redis.Client
	locker *redislock.Client
}

func openRedislock(ctx context.Context, env Env) (Locker, error) {
	if env.RedisAddr == "" {
		return nil, errors.New("no redis-server (pass -redis host:port)")
	}
	rdb := redis.NewClient(&redis.Options{Addr: env.RedisAddr})
	// redis-server may still be starting.
	var err error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err = rdb.Ping(ctx).Err(); err == nil {
			return &redisLocker{rdb: rdb, locker: redislock.New(rdb)}, nil
		}
	}
	rdb.Close()
	return nil, fmt.Errorf("redis at %s: %w", env.RedisAddr, err)
}

func (l *redisLocker) Acquire(ctx context.Context, resource string) (func(context.Context) error, error) {
	lock, err := l.locker.Obtain(ctx, resource, LeaseTTL, &redislock.Options{RetryStrategy: redislock.LinearBackoff(redisPoll)})
	if err != nil {
		return nil, err
	}
	return lock.Release, nil
}

func (l *redisLocker) Close() { l.rdb.Close() }
