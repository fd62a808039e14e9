package netstack

import (
	"testing"
	"time"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/stack"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// enqueueResult is what one enqueue returned.
type enqueueResult struct {
	n   int
	err tcpip.Error
}

// testPacket is a packet of one byte, v.
func testPacket(v byte) *stack.PacketBuffer {
	return stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithData([]byte{v})})
}

// A writer that finds the outbound ring full waits for the device's read to make room instead of
// dropping, and its packets follow the ones before them; with nobody reading, it drops what does
// not fit after fullWait and counts it in LinkDrops; close ends a wait at once.
func TestLinkFullRingWaits(t *testing.T) {
	t.Parallel()
	e := newLinkEndpoint(DefaultMTU)
	defer e.close()
	fill := func() {
		for i := range outQueueLen {
			pkt := testPacket(byte(i))
			if n, err := e.enqueue([]*stack.PacketBuffer{pkt}); n != 1 || err != nil {
				t.Fatalf("enqueue %d into a ring with room: %d, %v", i, n, err)
			}
			pkt.DecRef()
		}
	}
	enqueue := func(vs ...byte) <-chan enqueueResult {
		ch := make(chan enqueueResult, 1)
		pkts := make([]*stack.PacketBuffer, len(vs))
		for i, v := range vs {
			pkts[i] = testPacket(v)
		}
		go func() {
			n, err := e.enqueue(pkts)
			for _, p := range pkts {
				p.DecRef()
			}
			ch <- enqueueResult{n, err}
		}()
		return ch
	}
	waiting := func() int {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.waiting
	}
	read := func(k int) []byte {
		bufs, sizes := make([][]byte, k), make([]int, k)
		for i := range bufs {
			bufs[i] = make([]byte, 16)
		}
		n, err := e.read(bufs, sizes, 0)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		for i := range n {
			if sizes[i] != 1 {
				t.Fatalf("packet %d: %d bytes", i, sizes[i])
			}
			got[i] = bufs[i][0]
		}
		return got
	}

	// Full: two more packets wait (neither is dropped) until a read makes room for both. (The
	// bound is the test's: a busy machine must not let it expire before the read.)
	e.fullWait = testTimeout
	fill()
	drops := ReadTCPStats().LinkDrops
	ch := enqueue(0xa1, 0xa2)
	testutil.Eventually(t, testTimeout, "the writer waits for room", func() bool { return waiting() == 1 })
	if got := read(2); got[0] != 0 || got[1] != 1 {
		t.Fatalf("first packets read: %v", got)
	}
	if r := testutil.Await(t, ch, testTimeout, "the waiting enqueue"); r.n != 2 || r.err != nil {
		t.Fatalf("waiting enqueue: %+v", r)
	}
	for left := outQueueLen; left > 0; {
		got := read(min(left, batchSize))
		left -= len(got)
		if left == 0 && (got[len(got)-2] != 0xa1 || got[len(got)-1] != 0xa2) {
			t.Fatalf("the waiting writer's packets are not last: %x", got[len(got)-2:])
		}
	}
	if d := ReadTCPStats().LinkDrops - drops; d != 0 {
		t.Fatalf("%d packets dropped while the reader kept up", d)
	}

	// Full, and nobody reads: after fullWait the packet is dropped, and counted.
	e.fullWait = fullWait
	fill()
	start := time.Now()
	if r := testutil.Await(t, enqueue(0xb1), testTimeout, "the bounded enqueue"); r.n != 0 || r.err == nil {
		t.Fatalf("enqueue into a ring nobody reads: %+v", r)
	}
	if waited := time.Since(start); waited < fullWait {
		t.Fatalf("dropped after %v, before fullWait (%v)", waited, fullWait)
	}
	if d := ReadTCPStats().LinkDrops - drops; d < 1 {
		t.Fatalf("LinkDrops grew by %d, want at least 1", d)
	}

	// Close ends a wait at once. (The writer whose bound expired took itself off waiting.)
	e.fullWait = testTimeout
	ch = enqueue(0xc1)
	testutil.Eventually(t, testTimeout, "the writer waits for room", func() bool { return waiting() == 1 })
	e.close()
	if r := testutil.Await(t, ch, testTimeout, "the enqueue ended by close"); r.n != 0 || r.err == nil {
		t.Fatalf("enqueue ended by close: %+v", r)
	}
}
