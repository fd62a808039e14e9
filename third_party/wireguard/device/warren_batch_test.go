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
	b := newAdaptiveBatch(64)
	b.windowStart = t0
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
	small := newAdaptiveBatch(1)
	if small.active != 1 || small.nextAt(1, t0) != 1 {
		t.Fatalf("a batch of one stays one: %+v", small)
	}
}
