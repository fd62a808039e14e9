/* SPDX-License-Identifier: MIT
 *
 * Copyright (C) 2017-2025 WireGuard LLC. All Rights Reserved.
 */

package device

import "time"

// Warren: an adaptive batch. A receive loop (RoutineReceiveIncoming) or the TUN reader
// (RoutineReadFromTUN) holds a 64 KiB message buffer for every slot of its batch, for as long as it
// runs: 2 × 64 slots × 64 KiB = 8 MiB per device, nearly all of an idle tunnel's heap. With an
// adaptive batch a loop holds buffers only for the slots its recent reads used: it starts with
// MinActiveSlots (two), doubles its active slots as soon as one read fills them all (up to the bind's or
// the TUN's batch size), and at most once per shrinkEvery gives back the slots the busiest read of
// that span did not need (rounded up to a power of two). A busy tunnel reaches its full batch
// within a few reads; an idle one holds two buffers per loop. The shrink needs a read: Warren's
// bind and TUN (netstack.idleRead) return an empty one after 2 s of quiet to a loop holding more
// than two, so that a device nothing reaches after a burst shrinks too. The buffers go back to the
// device's pool, a sync.Pool, so the GC frees what no loop takes again.
const (
	MinActiveSlots = 2 // (netstack's reads bound their wait when handed more than this) a read of one datagram (a probe, a keepalive) leaves the batch as it is: no buffer churn
	shrinkEvery    = time.Second
)

// adaptiveBatch tracks one loop's active slots.
type adaptiveBatch struct {
	max, active int
	fixed       bool      // not adaptive (DeviceOptions.AdaptiveBatch unset): always max
	peak        int       // the most slots one read used since windowStart
	windowStart time.Time // start of the span the next shrink looks back over
	last        time.Time // the previous read
}

func newAdaptiveBatch(max int, adaptive bool) adaptiveBatch {
	now := time.Now()
	if !adaptive {
		return adaptiveBatch{max: max, active: max, fixed: true}
	}
	return adaptiveBatch{max: max, active: min(MinActiveSlots, max), windowStart: now, last: now}
}

// next returns the active slot count for the read after one that used count slots (a read that
// used them all grows it at once; a span of quiet shrinks it).
func (b *adaptiveBatch) next(count int) int { return b.nextAt(count, time.Now()) }

func (b *adaptiveBatch) nextAt(count int, now time.Time) int {
	if b.fixed {
		return b.active
	}
	if now.Sub(b.last) >= shrinkEvery {
		// Quiet for a whole span since the previous read: the reads before it (a burst that has
		// ended) say nothing about what the next ones need.
		b.peak, b.windowStart = 0, b.last
	}
	b.last = now
	b.peak = max(b.peak, count)
	if count >= b.active && b.active < b.max {
		return min(2*b.active, b.max)
	}
	if now.Sub(b.windowStart) >= shrinkEvery {
		want := MinActiveSlots
		for want < b.peak {
			want *= 2
		}
		b.peak, b.windowStart = 0, now
		return min(max(want, MinActiveSlots), b.active)
	}
	return b.active
}
