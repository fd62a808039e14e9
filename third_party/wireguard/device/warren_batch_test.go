/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

import (
	"testing"
	"time"
)

// Warren: the adaptive batch grows at once on full reads, never grows or shrinks on single
// datagrams, and gives back what a quiet second did not need.
func TestAdaptiveBatch(t *testing.T) {
	t0 := time.Now()
	b := newAdaptiveBatch(64, true)
	b.windowStart, b.last = t0, t0
	step := func(count int, at time.Duration, want int) {
		t.Helper()
		if got := b.nextAt(count, t0.Add(at)); got != want {
			t.Fatalf("read of %d at %v with %d active: next %d, want %d", count, at, b.active, got, want)
		}
		b.active = want
	}
	if b.active != 2 {
		t.Fatalf("starts with %d active slots, want 2", b.active)
	}
	step(1, 0, 2) // a probe: no change
	for _, want := range []int{4, 8, 16, 32, 64, 64} {
		step(b.active, 10*time.Millisecond, want) // full reads: doubles up to the maximum
	}
	step(3, 500*time.Millisecond, 64)  // within the second: no shrink
	step(1, 1100*time.Millisecond, 64) // the second's busiest read filled all 64: keep them
	step(3, 1500*time.Millisecond, 64)
	step(1, 2200*time.Millisecond, 4) // the busiest read of the last second used 3: four slots
	step(1, 3300*time.Millisecond, 2) // a quiet second: back to two
	step(1, 9*time.Second, 2)         // never below two
	// A burst, then a read after a quiet span: the burst no longer counts (no second small read
	// in a later span needed).
	for range 5 {
		step(b.active, 9100*time.Millisecond, min(2*b.active, 64))
	}
	step(64, 9200*time.Millisecond, 64)
	step(1, 9300*time.Millisecond, 64) // within the span of the burst
	step(1, 20*time.Second, 2)         // after ten quiet seconds
	small := newAdaptiveBatch(1, true)
	if small.active != 1 || small.nextAt(1, t0) != 1 {
		t.Fatalf("a batch of one stays one: %+v", small)
	}
	fixed := newAdaptiveBatch(64, false) // DeviceOptions.AdaptiveBatch unset: upstream's full batch
	if fixed.active != 64 || fixed.nextAt(1, t0.Add(time.Hour)) != 64 || fixed.nextAt(64, t0) != 64 {
		t.Fatalf("a fixed batch stays full: %+v", fixed)
	}
}
