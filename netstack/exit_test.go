package netstack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// chanHandler hands every flow to the test through channels.
type chanHandler struct {
	tcp chan *TCPFlow
	udp chan *UDPFlow
}

func newChanHandler() *chanHandler {
	return &chanHandler{tcp: make(chan *TCPFlow, 16), udp: make(chan *UDPFlow, 16)}
}

func (h *chanHandler) HandleTCP(f *TCPFlow) { h.tcp <- f }
func (h *chanHandler) HandleUDP(f *UDPFlow) { h.udp <- f }

// relayTCP copies both ways between a and b, half-closing each direction
// when its source ends, and closes both when done.
func relayTCP(a, b net.Conn) {
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		_, _ = io.Copy(dst, src)
		if cw, ok := dst.(closeWriter); ok {
			_ = cw.CloseWrite()
		}
	}
	wg.Add(2)
	go pipe(a, b)
	go pipe(b, a)
	wg.Wait()
	a.Close()
	b.Close()
}

// startHashServer runs a real TCP server on 127.0.0.1 that reads until EOF
// and answers with sha256(received) followed by replyLen payload bytes (seed 7).
func startHashServer(t *testing.T, replyLen int64) netip.AddrPort {
	t.Helper()
	return testutil.Serve(t, func(c *net.TCPConn, _ <-chan struct{}) {
		_ = c.SetDeadline(time.Now().Add(testTimeout))
		h := sha256.New()
		if _, err := io.Copy(h, c); err != nil {
			return
		}
		_, _ = c.Write(h.Sum(nil))
		_, _ = io.Copy(c, testutil.Payload(7, replyLen))
	}).AddrPort()
}

func TestExitTCPAccept(t *testing.T) {
	real := startHashServer(t, 1<<20)
	h := newChanHandler()
	client, _ := newPair(t, Config{AllowLoopback: true}, Config{Handler: h, AllowLoopback: true})

	for _, dst := range []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.10:80"), // mapped by the handler to real
		real,                                     // the exit's own loopback
	} {
		t.Run(dst.String(), func(t *testing.T) {
			const size = 4 << 20
			relayed := make(chan error, 1)
			go func() {
				f, ok := testutil.Recv(h.tcp, testTimeout)
				if !ok {
					relayed <- errors.New("no flow")
					return
				}
				if f.Dst != dst || f.Src.Addr() != clientAddr || f.Src.Port() == 0 {
					f.Reject()
					relayed <- errors.New("flow " + f.Src.String() + "->" + f.Dst.String())
					return
				}
				up, err := net.Dial("tcp4", real.String())
				if err != nil {
					f.Reject()
					relayed <- err
					return
				}
				c, err := f.Accept()
				if err != nil {
					up.Close()
					relayed <- err
					return
				}
				if c.LocalAddr().String() != dst.String() || c.RemoteAddr().String() != f.Src.String() {
					relayed <- errors.New("accepted conn addrs " + c.LocalAddr().String() + " " + c.RemoteAddr().String())
				}
				if _, err := f.Accept(); !errors.Is(err, ErrFlowDone) {
					relayed <- errors.New("second Accept did not fail")
				}
				relayTCP(c, up)
				relayed <- nil
			}()

			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c, err := client.stack.DialContext(ctx, "tcp", dst)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(testTimeout))
			go func() {
				_, _ = io.Copy(c, testutil.Payload(3, size))
				_ = c.(closeWriter).CloseWrite()
			}()
			got, err := io.ReadAll(c)
			if err != nil {
				t.Fatal(err)
			}
			want := testutil.PayloadSum(3, size)
			if len(got) != 32+1<<20 || hex.EncodeToString(got[:32]) != want {
				t.Fatalf("got %d bytes, hash %x; want %d, %s", len(got), got[:min(32, len(got))], 32+1<<20, want)
			}
			if sum, _, _ := testutil.Sum(bytes.NewReader(got[32:])); sum != testutil.PayloadSum(7, 1<<20) {
				t.Error("reply payload hash mismatch")
			}
			if err := testutil.Await(t, relayed, testTimeout, "relay"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestExitTCPReject(t *testing.T) {
	h := newChanHandler()
	client, _ := newPair(t, Config{}, Config{Handler: h})
	go func() {
		f, ok := testutil.Recv(h.tcp, testTimeout)
		if !ok {
			return
		}
		f.Reject()
		f.Reject() // idempotent
		if _, err := f.Accept(); !errors.Is(err, ErrFlowDone) {
			t.Errorf("Accept after Reject: %v", err)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	start := time.Now()
	c, err := client.stack.DialContext(ctx, "tcp", netip.MustParseAddrPort("192.0.2.10:443"))
	if err == nil {
		c.Close()
		t.Fatal("dial succeeded")
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial error %v, want connection refused", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("refusal took %v", d)
	}
}

// TestExitUDP forwards a UDP flow to a real echo server on 127.0.0.1.
func TestExitUDP(t *testing.T) {
	echo := testutil.UDPEchoServer(t)

	h := newChanHandler()
	client, _ := newPair(t, Config{}, Config{Handler: h})
	dst := netip.MustParseAddrPort("192.0.2.53:53")
	var (
		relays  sync.WaitGroup
		closeMu sync.Mutex
		closers []io.Closer
	)
	defer func() {
		closeMu.Lock()
		for _, c := range closers {
			c.Close()
		}
		closeMu.Unlock()
		relays.Wait()
	}()
	var flows int
	handlerDone := make(chan error, 1)
	go func() {
		f, ok := testutil.Recv(h.udp, testTimeout)
		if !ok {
			handlerDone <- errors.New("no flow")
			return
		}
		flows++
		if f.Dst != dst || f.Src.Addr() != clientAddr {
			f.Reject()
			handlerDone <- errors.New("flow " + f.Src.String() + "->" + f.Dst.String())
			return
		}
		up, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(echo))
		if err != nil {
			f.Reject()
			handlerDone <- err
			return
		}
		c, err := f.Accept()
		if err != nil {
			up.Close()
			handlerDone <- err
			return
		}
		closeMu.Lock()
		closers = append(closers, c, up)
		closeMu.Unlock()
		relays.Add(2)
		pipe := func(dst, src net.Conn) {
			defer relays.Done()
			defer dst.Close()
			defer src.Close()
			buf := make([]byte, 2048)
			for {
				n, err := src.Read(buf)
				if err != nil {
					return
				}
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
		}
		go pipe(up, c)
		go pipe(c, up)
		handlerDone <- nil
	}()

	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := client.stack.DialContext(ctx, "udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const count = 100
	got := 0
	buf := make([]byte, 2048)
	for i := range count {
		msg := bytes.Repeat([]byte{byte(i)}, 10+i*7)
		if udpRoundTrip(t, c, buf, msg, msg, fmt.Sprintf("echo %d", i)) {
			got++
		}
	}
	if err := testutil.Await(t, handlerDone, testTimeout, "handler"); err != nil {
		t.Fatal(err)
	}
	if got != count {
		t.Errorf("got %d echoes, want %d", got, count)
	}
	select {
	case f := <-h.udp:
		f.Reject()
		t.Errorf("second UDP flow %v->%v for the same 4-tuple", f.Src, f.Dst)
	default:
	}
	if flows != 1 {
		t.Errorf("flows = %d", flows)
	}
}

// TestExitUDPStash sends several datagrams before the handler decides; all of
// them reach the accepted conn, and only one flow is reported.
func TestExitUDPStash(t *testing.T) {
	h := newChanHandler()
	client, _ := newPair(t, Config{}, Config{Handler: h})
	dst := netip.MustParseAddrPort("192.0.2.7:9999")
	c, err := client.stack.DialContext(context.Background(), "udp", dst)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte{0}); err != nil {
		t.Fatal(err)
	}
	f := testutil.Await(t, h.udp, testTimeout, "udp flow")
	for i := 1; i < 5; i++ {
		if _, err := c.Write([]byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	// The exit has received the later datagrams when it answers this ping,
	// which uses a separate flow; wait for that flow as the event.
	ping, err := client.stack.DialContext(context.Background(), "udp", netip.MustParseAddrPort("192.0.2.8:1"))
	if err != nil {
		t.Fatal(err)
	}
	defer ping.Close()
	if _, err := ping.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	testutil.Await(t, h.udp, testTimeout, "ping flow").Reject()
	conn, err := f.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(testTimeout))
	var got []byte
	buf := make([]byte, 16)
	for len(got) < 5 {
		n, err := conn.Read(buf)
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		got = append(got, buf[:n]...)
	}
	if !bytes.Equal(got, []byte{0, 1, 2, 3, 4}) {
		t.Errorf("datagrams %v", got)
	}
	if _, err := conn.Write([]byte("back")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(testTimeout))
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "back" {
		t.Fatalf("reply %q, %v", buf[:n], err)
	}
	select {
	case f := <-h.udp:
		t.Errorf("extra flow %v->%v", f.Src, f.Dst)
		f.Reject()
	default:
	}
}

// TestLocalListenerWins: a listener on the exit's own address takes the
// connection; a port without one goes to the handler.
func TestLocalListenerWins(t *testing.T) {
	h := newChanHandler()
	client, exit := newPair(t, Config{}, Config{Handler: h})
	ln, err := exit.stack.ListenTCP(netip.AddrPortFrom(exitAddr, 7000))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		_, _ = c.Write([]byte("listener"))
		c.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := client.stack.DialContext(ctx, "tcp", netip.AddrPortFrom(exitAddr, 7000))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil || string(got) != "listener" {
		t.Fatalf("read %q, %v", got, err)
	}

	// Port 7001 has no listener: the forwarder hands it to the handler.
	go func() {
		f, ok := testutil.Recv(h.tcp, testTimeout)
		if !ok {
			return
		}
		if f.Dst != netip.AddrPortFrom(exitAddr, 7001) {
			t.Errorf("flow dst %v", f.Dst)
		}
		f.Reject()
	}()
	if c, err := client.stack.DialContext(ctx, "tcp", netip.AddrPortFrom(exitAddr, 7001)); !errors.Is(err, syscall.ECONNREFUSED) {
		if c != nil {
			c.Close()
		}
		t.Fatalf("dial 7001: %v", err)
	}
	select {
	case f := <-h.tcp:
		t.Errorf("handler saw %v->%v", f.Src, f.Dst)
		f.Reject()
	default:
	}
}

// TestForwarderSourceShare: one source address with fwdMaxInFlightPerSource flows waiting for
// their decision gets no more (its next SYN is ignored and counted, not reset), while another
// source's flow still arrives at once.
func TestForwarderSourceShare(t *testing.T) {
	h := &chanHandler{tcp: make(chan *TCPFlow, fwdMaxInFlightPerSource+8), udp: make(chan *UDPFlow, 1)}
	client, _ := newPair(t, Config{}, Config{Handler: h})
	ctx, cancel := context.WithCancel(context.Background())
	var dials sync.WaitGroup
	defer func() {
		cancel()
		dials.Wait()
	}()
	dial := func(dst netip.AddrPort) {
		dials.Go(func() {
			if c, err := client.stack.DialContext(ctx, "tcp", dst); err == nil {
				c.Close()
			}
		})
	}
	var held []*TCPFlow
	defer func() {
		for _, f := range held {
			f.Reject()
		}
	}()
	for i := range fwdMaxInFlightPerSource {
		dial(netip.AddrPortFrom(netip.MustParseAddr("192.0.2.20"), uint16(1000+i)))
	}
	for len(held) < fwdMaxInFlightPerSource {
		f, ok := testutil.Recv(h.tcp, testTimeout)
		if !ok {
			t.Fatalf("%d of %d flows arrived", len(held), fwdMaxInFlightPerSource)
		}
		held = append(held, f)
	}
	drops := ReadTCPStats().ForwarderDrops
	dial(netip.MustParseAddrPort("192.0.2.21:80")) // the same source, over its share
	testutil.Eventually(t, testTimeout, "the SYN over the share counted", func() bool { return ReadTCPStats().ForwarderDrops > drops })
	dial(netip.MustParseAddrPort("[2001:db8::21]:80")) // the client's other address: its own share
	f, ok := testutil.Recv(h.tcp, testTimeout)
	if !ok || f.Src.Addr() != clientAddr6 {
		t.Fatalf("flow %+v (%v), want one from %v", f, ok, clientAddr6)
	}
	held = append(held, f)
	select {
	case f := <-h.tcp:
		held = append(held, f)
		t.Errorf("a flow from %v over its share", f.Src)
	default:
	}
}
