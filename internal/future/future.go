// Package future waits for protoactor futures from outside the actor system, bounded by a context.
package future

import (
	"context"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// Result is a future's outcome.
type Result struct {
	V   any
	Err error
}

// ResultOf waits for f in a goroutine and delivers its result once. It must be f's only waiter:
// protoactor's Future wakes waiters with sync.Cond.Signal, so a second Result() on the same
// future can block forever. The goroutine ends when f completes or times out (futures always do).
func ResultOf(f *actor.Future) <-chan Result {
	ch := make(chan Result, 1)
	go func() {
		v, err := f.Result()
		ch <- Result{v, err}
	}()
	return ch
}

// AwaitResult waits for a result from ResultOf, or for ctx to end, whichever comes first.
func AwaitResult(ctx context.Context, ch <-chan Result) (any, error) {
	select {
	case r := <-ch:
		return r.V, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Await waits for f, or for ctx to end: ResultOf and AwaitResult in one, for a future waited on once.
func Await(ctx context.Context, f *actor.Future) (any, error) { return AwaitResult(ctx, ResultOf(f)) }

// UntilDeadline is the time left before ctx's deadline (at least a millisecond), or def without one:
// the timeout to give a future that ctx bounds.
func UntilDeadline(ctx context.Context, def time.Duration) time.Duration {
	if dl, ok := ctx.Deadline(); ok {
		if d := time.Until(dl); d > 0 {
			return d
		}
		return time.Millisecond
	}
	return def
}
