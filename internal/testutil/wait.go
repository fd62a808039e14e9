// Package testutil holds the helpers Warren's tests share: deadline-bounded waits, deterministic
// payloads, loopback servers, WireGuard keys, a plain WireGuard server (WGServer) and a UDP relay
// that can blackhole a path (UDPRelay).
package testutil

import (
	"context"
	"testing"
	"time"
)

// Tick is how often the polling waits look again.
const Tick = 10 * time.Millisecond

// callTimeout bounds one call of a getter or condition that takes a context.
const callTimeout = 5 * time.Second

// Eventually calls cond every Tick until it holds; if it still does not hold after within, it
// fails the test naming what it waited for.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(Tick)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
		<-tick.C
	}
}

// Poll calls get (each call bounded by 5 s) every Tick until it returns no error and a value ok
// accepts, and returns that value. After within it fails the test with the last value and error
// (printed with %+v: give T a String method for a shorter line).
func Poll[T any](t testing.TB, within time.Duration, what string, get func(context.Context) (T, error), ok func(T) bool) T {
	t.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(Tick)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		v, err := get(ctx)
		cancel()
		if err == nil && ok(v) {
			return v
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last: %+v, err %v", what, within, v, err)
		}
		<-tick.C
	}
}

// Until calls ok (each call bounded by 5 s) every Tick until it returns true, then returns true;
// once limit has passed it returns false. It does not fail the test, so it may run off the test's
// goroutine.
func Until(limit time.Duration, ok func(context.Context) bool) bool {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(Tick)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		done := ok(ctx)
		cancel()
		if done {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

// Await receives one value from ch (the zero value if ch is closed) or fails the test, naming
// what it waited for, when within passes first.
func Await[T any](t testing.TB, ch <-chan T, within time.Duration, what string) T {
	t.Helper()
	v, ok := Recv(ch, within)
	if !ok {
		t.Fatalf("timed out after %v waiting for %s", within, what)
	}
	return v
}

// Recv receives one value from ch (the zero value if ch is closed) and true, or the zero value
// and false when within passes first. It does not fail the test, so it may run off the test's
// goroutine.
func Recv[T any](ch <-chan T, within time.Duration) (T, bool) {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	select {
	case v := <-ch:
		return v, true
	case <-deadline.C:
		var zero T
		return zero, false
	}
}

// AwaitMatch receives from ch until a value match accepts, and returns it; the values before it
// are dropped. It fails the test if ch closes first or within passes.
func AwaitMatch[T any](t testing.TB, ch <-chan T, within time.Duration, what string, match func(T) bool) T {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case v, ok := <-ch:
			if !ok {
				t.Fatalf("channel closed while waiting for %s", what)
			}
			if match(v) {
				return v
			}
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
	}
}

// AwaitClosed drains ch until it is closed, or fails the test, naming what it waited for, when
// within passes first.
func AwaitClosed[T any](t testing.TB, ch <-chan T, within time.Duration, what string) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", within, what)
		}
	}
}
