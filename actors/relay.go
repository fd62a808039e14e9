package actors

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// ByteTotals counts the bytes delivered by all the connections of one role of an engine (its
// tunnels' proxied connections, or its exit's forwarded flows) as they move: ended and active
// connections together, so the counts only grow. Statistics only: no actor acts on them.
//
// Every write of every connection of the role adds to it, from whichever core its copy loop runs
// on: the counts are spread over byteStripes stripes of a cache line each (a connection keeps to
// the stripe it was given), so that concurrent connections do not fight over one line; a read sums
// them.
type ByteTotals struct {
	in, out [byteStripes]paddedInt64
}

// byteStripes: stripes of a ByteTotals (more than the cores of most machines that run Warren).
const byteStripes = 16

// paddedInt64 is an atomic counter alone on its 64-byte cache line.
type paddedInt64 struct {
	atomic.Int64
	_ [56]byte
}

// stripeNext hands connections their stripes in turn (once per connection).
var stripeNext atomic.Uint32

// In is the bytes delivered from the incoming to the outgoing side (client: proxy client → target;
// exit: tunnel → destination).
func (b *ByteTotals) In() int64 { return sum(&b.in) }

// Out is the bytes delivered from the outgoing to the incoming side.
func (b *ByteTotals) Out() int64 { return sum(&b.out) }

func sum(s *[byteStripes]paddedInt64) int64 {
	var n int64
	for i := range s {
		n += s[i].Load()
	}
	return n
}

// connBytes counts one direction of a connection as its copy loop or request loop delivers: the
// connection's own count and, if set, its role's total. One atomic add each per write, no allocation.
type connBytes struct {
	n     atomic.Int64
	total *atomic.Int64
	_     [48]byte // the other direction's counter, written by the other copy loop, is on its own line
}

// Add counts d bytes delivered (proxy.Counter).
func (b *connBytes) Add(d int64) int64 {
	if b.total != nil {
		b.total.Add(d)
	}
	return b.n.Add(d)
}

// Load is the connection's count so far.
func (b *connBytes) Load() int64 { return b.n.Load() }

// connLive is a connection's byte counts, shared with its owner: the tunnel reads them for
// Connections and Stats while the connection runs (its copy loops write them).
type connLive struct {
	in, out connBytes
	udp     udpLive // a UDP association's datagrams and drops
}

func newConnLive(totals *ByteTotals) *connLive {
	l := &connLive{}
	if totals != nil {
		i := stripeNext.Add(1) % byteStripes
		l.in.total, l.out.total = &totals.in[i].Int64, &totals.out[i].Int64
	}
	return l
}

// bufPool holds relay buffers: big enough for any UDP datagram, so one pool serves both protocols.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 64<<10); return &b }}

type closeWriter interface{ CloseWrite() error }

// aborter is a connection that can end with a reset instead of a FIN (netstack TCP conns).
type aborter interface{ Abort() error }

// pumpDone reports the end of one direction: which socket failed, if one did.
type pumpDone struct {
	toOut    bool  // the in → out direction
	eof      bool  // the source sent all it had (clean end of this direction)
	readErr  error // reading the source failed
	writeErr error // writing the destination failed
	endAll   bool  // this direction's end ends the connection (no half-close possible)
}

// pump copies src to dst with a pooled buffer until EOF or error, counting what dst accepted. On
// EOF it half-closes dst so the other side sees the end of this direction while the opposite
// direction goes on. It allocates nothing per read and reports once, at the end.
func pump(dst net.Conn, src io.Reader, counter interface{ Add(int64) int64 }, report func(*pumpDone)) {
	bufp := bufPool.Get().(*[]byte)
	buf := *bufp
	d := &pumpDone{}
	for {
		nr, er := src.Read(buf)
		if nr > 0 {
			nw, ew := dst.Write(buf[:nr])
			counter.Add(int64(nw))
			if ew != nil {
				d.writeErr = ew
				break
			}
		}
		if er != nil {
			if er == io.EOF {
				d.eof = true
			} else {
				d.readErr = er
			}
			break
		}
	}
	bufPool.Put(bufp)
	if d.eof {
		if cw, ok := dst.(closeWriter); ok {
			_ = cw.CloseWrite()
		} else {
			d.endAll = true
		}
	}
	report(d)
}

// classify maps an I/O error to an end reason.
func classify(err error) messages.EndReason {
	switch {
	case err == nil:
		return messages.EndNormal
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNABORTED):
		return messages.EndReset
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return messages.EndTimeout
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return messages.EndTimeout
	}
	return messages.EndError
}

// abort ends c with a reset where the transport allows it, else closes it.
func abort(c net.Conn) {
	switch c := c.(type) {
	case nil:
	case *net.TCPConn:
		_ = c.SetLinger(0)
		_ = c.Close()
	case aborter:
		_ = c.Abort()
	default:
		_ = c.Close()
	}
}

func closeQuietly(c net.Conn) {
	if c != nil {
		_ = c.Close()
	}
}

// lingerClose half-closes c, reads and discards what the peer still sends for up to d (so the
// kernel does not answer unread data with a reset that destroys a reply in flight), then closes.
func lingerClose(c net.Conn, d time.Duration) {
	if cw, ok := c.(closeWriter); ok {
		_ = cw.CloseWrite()
		_ = c.SetReadDeadline(time.Now().Add(d))
		bufp := bufPool.Get().(*[]byte)
		for i := 0; i < 16; i++ { // at most 1 MiB
			if _, err := c.Read(*bufp); err != nil {
				break
			}
		}
		bufPool.Put(bufp)
	}
	_ = c.Close()
}
