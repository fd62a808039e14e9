package netstack

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/third_party/wireguard/conn"
)

// readResult is what one read returned.
type readResult struct {
	n   int
	err error
}

// An idle read of the TUN side that was handed more than heldFloor buffers returns no packet after
// idleRead, so the device's adaptive batch can give back the buffers of its last burst; one handed
// heldFloor buffers waits until there is something (here: the close).
func TestLinkReadIdleBound(t *testing.T) {
	t.Parallel()
	e := newLinkEndpoint(DefaultMTU)
	read := func(slots int) <-chan readResult {
		ch := make(chan readResult, 1)
		bufs, sizes := make([][]byte, slots), make([]int, slots)
		for i := range bufs {
			bufs[i] = make([]byte, 2000)
		}
		go func() {
			n, err := e.read(bufs, sizes, 0)
			ch <- readResult{n, err}
		}()
		return ch
	}
	start := time.Now()
	if r := testutil.Await(t, read(heldFloor+1), idleRead+time.Second, "an idle read of 3 buffers"); r.n != 0 || r.err != nil {
		t.Fatalf("idle read of 3 buffers: %d packets, %v", r.n, r.err)
	}
	if waited := time.Since(start); waited < idleRead {
		t.Fatalf("idle read of 3 buffers returned after %v, before idleRead (%v)", waited, idleRead)
	}
	ch := read(heldFloor)
	if r, ok := testutil.Recv(ch, idleRead+idleRead/4); ok {
		t.Fatalf("an idle read of 2 buffers returned %+v", r)
	}
	e.close()
	if r := testutil.Await(t, ch, testTimeout, "the read after close"); !errors.Is(r.err, os.ErrClosed) {
		t.Fatalf("read after close: %+v", r)
	}
}

// The same bound on the bind's receive function: more than heldFloor buffers, it returns no
// datagram after 1.5 to 2 s (idleRead); with heldFloor it waits, and receives what comes.
func TestBindReceiveIdleBound(t *testing.T) {
	t.Parallel()
	b := NewBind(netip.MustParseAddr("127.0.0.1"))
	fns, port, err := b.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	receive := func(slots int) <-chan readResult {
		ch := make(chan readResult, 1)
		bufs, sizes, eps := make([][]byte, slots), make([]int, slots), make([]conn.Endpoint, slots)
		for i := range bufs {
			bufs[i] = make([]byte, 2000)
		}
		go func() {
			n, err := fns[0](bufs, sizes, eps)
			if n > 0 && sizes[0] != 5 {
				err = errors.New("wrong size")
			}
			ch <- readResult{n, err}
		}()
		return ch
	}
	start := time.Now()
	if r := testutil.Await(t, receive(heldFloor+1), idleRead+time.Second, "an idle receive of 3 buffers"); r.n != 0 || r.err != nil {
		t.Fatalf("idle receive of 3 buffers: %d datagrams, %v", r.n, r.err)
	}
	if waited := time.Since(start); waited < idleRead-idleRead/4 {
		t.Fatalf("idle receive of 3 buffers returned after %v", waited)
	}
	ch := receive(heldFloor)
	if r, ok := testutil.Recv(ch, idleRead+idleRead/4); ok {
		t.Fatalf("an idle receive of 2 buffers returned %+v", r)
	}
	c, err := net.Dial("udp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if r := testutil.Await(t, ch, testTimeout, "the datagram"); r.n != 1 || r.err != nil {
		t.Fatalf("receive of 2 buffers: %+v", r)
	}
	// Bounded again, a datagram that comes at once is received as usual.
	ch = receive(heldFloor + 1)
	if _, err := c.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	if r := testutil.Await(t, ch, testTimeout, "the second datagram"); r.n != 1 || r.err != nil {
		t.Fatalf("receive of 3 buffers: %+v", r)
	}
}
