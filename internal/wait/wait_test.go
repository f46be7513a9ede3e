package wait

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPoll(t *testing.T) {
	t.Parallel()
	t.Run("BecomesTrue", func(t *testing.T) {
		t.Parallel()
		calls := 0
		err := Poll(context.Background(), 5*time.Second, time.Millisecond, func() bool { calls++; return calls == 3 })
		if err != nil || calls != 3 {
			t.Fatalf("Poll = %v after %d calls; want nil after 3", err, calls)
		}
	})
	t.Run("TimesOut", func(t *testing.T) {
		t.Parallel()
		start := time.Now()
		err := Poll(context.Background(), 50*time.Millisecond, 5*time.Millisecond, func() bool { return false })
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Poll of a condition that never holds = %v; want ErrTimeout", err)
		}
		if took := time.Since(start); took < 50*time.Millisecond {
			t.Fatalf("Poll gave up after %s; the timeout is 50ms", took)
		}
	})
	t.Run("Canceled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := Poll(ctx, time.Minute, time.Second, func() bool { return false })
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Poll with a canceled context = %v; want context.Canceled", err)
		}
	})
}
