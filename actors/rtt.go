package actors

// The histogram of signaling round trips (SignalingStats.RTT): statistics only, counted with
// atomics by the request goroutines; no actor acts on it.

import (
	"sort"
	"sync/atomic"
	"time"
)

// SignalingRTTBounds are the upper bounds, in seconds, of the buckets of SignalingStats.RTT; a last
// bucket takes what is slower than the last bound.
var SignalingRTTBounds = [...]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// RTTHistogram counts round trips in the buckets of SignalingRTTBounds.
type RTTHistogram struct {
	counts [len(SignalingRTTBounds) + 1]atomic.Uint64
	sum    atomic.Int64 // nanoseconds
}

// Observe counts one round trip of d: in the first bucket whose bound is at least d.
func (h *RTTHistogram) Observe(d time.Duration) {
	h.counts[sort.SearchFloat64s(SignalingRTTBounds[:], d.Seconds())].Add(1)
	h.sum.Add(int64(d))
}

// Snapshot returns the count of each bucket (not cumulative; len(SignalingRTTBounds)+1, the last
// beyond the last bound), their sum in seconds and the number of round trips (the counts' total).
func (h *RTTHistogram) Snapshot() (counts []uint64, sum float64, count uint64) {
	counts = make([]uint64, len(h.counts))
	for i := range h.counts {
		counts[i] = h.counts[i].Load()
		count += counts[i]
	}
	return counts, time.Duration(h.sum.Load()).Seconds(), count
}
