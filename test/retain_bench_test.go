package test

import (
	"testing"
	"time"
)

// churnSettle is how long BenchmarkSwitchReconnectChurn lets a phase's aftermath settle at most:
// longer than the exits' netstack TIME_WAIT (5 s, netstack.tcpTimeWait), so that the endpoints of
// the phase's last connections have expired and are not counted as retained. The wait ends earlier
// if the heap is back at its level before the phase.
const churnSettle = 8 * time.Second

// BenchmarkSwitchReconnectChurn: the cycles of TestSwitchReconnectRetainNothing, measured. After
// the warm-up and a wait for the process to be at rest, 100 Switch cycles, a settle, 100 Reconnect
// cycles, a settle. Reports the Go heap retained per Switch cycle and per Reconnect cycle (each
// phase over the state before it, after GC): in use (B-retained/…, as the test checks: live
// objects and the free space of the spans they keep) and live (B-live/…); the goroutines and file
// descriptors left after both phases; and the time of one cycle.
//
//	go test ./test -run '^$' -bench 'SwitchReconnectChurn' -benchtime 1x
//	WARREN_HEAP_PROFILE_DIR=/tmp/prof go test ./test -run '^$' -bench 'SwitchReconnectChurn' -benchtime 1x -memprofilerate 1
//	go tool pprof -sample_index=inuse_space -top -diff_base /tmp/prof/switch-reconnect-base.pprof /tmp/prof/switch-reconnect-switched.pprof
func BenchmarkSwitchReconnectChurn(b *testing.B) {
	const cycles = 100
	for range b.N {
		w := newRetainWorld(b)
		w.warmUp()
		base, stacks := quiet(b, retainSettle)
		writeHeapProfile(b, "switch-reconnect-base")

		t0 := time.Now()
		for i := range cycles {
			w.switchCycle(i)
		}
		perSwitch := time.Since(t0) / cycles
		switched, _ := settle(b, base, stacks, 0, churnSettle)
		writeHeapProfile(b, "switch-reconnect-switched")

		t0 = time.Now()
		for i := range cycles {
			w.reconnectCycle(i)
		}
		perReconnect := time.Since(t0) / cycles
		target := base
		target.heap = switched.heap
		end, _ := settle(b, target, stacks, 0, churnSettle)
		writeHeapProfile(b, "switch-reconnect-end")
		writeGoroutines(b, "switch-reconnect-goroutines")

		per := func(to, from uint64) float64 { return (float64(to) - float64(from)) / cycles }
		b.ReportMetric(per(switched.heap, base.heap), "B-retained/switch")
		b.ReportMetric(per(end.heap, switched.heap), "B-retained/reconnect")
		b.ReportMetric(per(switched.live, base.live), "B-live/switch")
		b.ReportMetric(per(end.live, switched.live), "B-live/reconnect")
		b.ReportMetric(float64(end.goroutines-base.goroutines), "goroutines-left")
		b.ReportMetric(float64(end.fds-base.fds), "fds-left")
		b.ReportMetric(float64(perSwitch.Microseconds())/1000, "ms/switch")
		b.ReportMetric(float64(perReconnect.Microseconds())/1000, "ms/reconnect")
	}
}
