package netstack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/third_party/wireguard/conn"
	"github.com/warren-tunnel/warren/third_party/wireguard/tun"
)

func TestStackCloseIdempotent(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	s, err := New(Config{Addresses: []netip.Addr{clientAddr}})
	if err != nil {
		t.Fatal(err)
	}
	if ev := <-s.Events(); ev != tun.EventUp {
		t.Fatalf("first event %v", ev)
	}
	if s.BatchSize() != batchSize {
		t.Errorf("BatchSize %d", s.BatchSize())
	}
	if mtu, _ := s.MTU(); mtu != DefaultMTU {
		t.Errorf("MTU %d", mtu)
	}
	bufs := [][]byte{make([]byte, 2000)}
	sizes := []int{0}
	readErr := make(chan error, 1)
	go func() {
		_, err := s.Read(bufs, sizes, 0)
		readErr <- err
	}()
	// A dial makes the stack send a SYN, which the blocked Read returns.
	ctx, cancel := context.WithCancel(context.Background())
	dialErr := make(chan error, 1)
	go func() {
		_, err := s.DialContext(ctx, "tcp", netip.MustParseAddrPort("10.99.0.9:80"))
		dialErr <- err
	}()
	if err := testutil.Await(t, readErr, testTimeout, "read"); err != nil {
		t.Fatal(err)
	}
	if sizes[0] < 40 || bufs[0][0]>>4 != 4 {
		t.Fatalf("read %d bytes, version %d", sizes[0], bufs[0][0]>>4)
	}
	// A Read blocked when Close is called returns os.ErrClosed.
	go func() {
		for {
			if _, err := s.Read(bufs, sizes, 0); err != nil {
				readErr <- err
				return
			}
		}
	}()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := testutil.Await(t, readErr, testTimeout, "read after close"); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if err := testutil.Await(t, dialErr, testTimeout, "dial"); err == nil {
		t.Fatal("dial succeeded")
	}
	if _, err := s.Read(bufs, sizes, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Read: %v", err)
	}
	if _, err := s.Write([][]byte{make([]byte, 40)}, 0); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("Write: %v", err)
	}
	if _, ok := <-s.Events(); ok {
		t.Fatal("Events not closed")
	}
}

// TestDeviceCloseAfterTraffic closes the devices while a connection, a
// listener and an undecided flow are open; everything unblocks and no
// goroutine remains.
func TestDeviceCloseAfterTraffic(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := newChanHandler()
	client, exit := newPair(t, Config{}, Config{Handler: h})
	ln, err := exit.stack.ListenTCP(netip.AddrPortFrom(exitAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				acceptErr <- err
				return
			}
			accepted <- c
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := client.stack.DialContext(ctx, "tcp", netip.AddrPortFrom(exitAddr, 80))
	if err != nil {
		t.Fatal(err)
	}
	sc := testutil.Await(t, accepted, testTimeout, "accept")
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("%q %v", buf, err)
	}
	// An undecided flow.
	go func() {
		if c, err := client.stack.DialContext(ctx, "tcp", netip.MustParseAddrPort("192.0.2.1:1")); err == nil {
			c.Close()
		}
	}()
	flow := testutil.Await(t, h.tcp, testTimeout, "flow")
	blocked := make(chan error, 1)
	go func() {
		_, err := sc.Read(buf)
		blocked <- err
	}()

	client.dev.Close()
	exit.dev.Close()
	exit.dev.Close()
	cancel()

	if err := testutil.Await(t, blocked, testTimeout, "blocked read"); err == nil {
		t.Error("read on closed stack succeeded")
	}
	if err := testutil.Await(t, acceptErr, testTimeout, "accept"); err == nil {
		t.Error("accept on closed stack succeeded")
	}
	if _, err := flow.Accept(); !errors.Is(err, ErrFlowDone) {
		t.Errorf("Accept after close: %v", err)
	}
	flow.Reject()
	c.Close()
	sc.Close()
	ln.Close()
	if err := exit.stack.Close(); err != nil {
		t.Error(err)
	}
}

func TestBindCloseReopen(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, b := NewBind(netip.MustParseAddr("127.0.0.1")), NewBind(netip.MustParseAddr("127.0.0.1"))
	fnsA, portA, err := a.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	if portA == 0 || a.LocalAddrPort().Port() != portA || len(fnsA) != 1 {
		t.Fatalf("port %d, LocalAddrPort %v, %d fns", portA, a.LocalAddrPort(), len(fnsA))
	}
	if _, _, err := a.Open(0); !errors.Is(err, conn.ErrBindAlreadyOpen) {
		t.Fatalf("second Open: %v", err)
	}
	if _, _, err := b.Open(0); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ep, err := b.ParseEndpoint(a.LocalAddrPort().String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.ParseEndpoint("nonsense"); err == nil {
		t.Error("ParseEndpoint accepted nonsense")
	}

	// One batched send of 40 datagrams arrives complete and in order.
	const n = 40
	out := make([][]byte, n)
	for i := range out {
		out[i] = []byte{byte(i), byte(i * 3)}
	}
	if err := b.Send(out, ep); err != nil {
		t.Fatal(err)
	}
	bufs := make([][]byte, batchSize)
	for i := range bufs {
		bufs[i] = make([]byte, 1500)
	}
	sizes := make([]int, batchSize)
	eps := make([]conn.Endpoint, batchSize)
	got := 0
	for got < n {
		k, err := fnsA[0](bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			if sizes[i] != 2 || bufs[i][0] != byte(got) || bufs[i][1] != byte(got*3) {
				t.Fatalf("datagram %d: %v", got, bufs[i][:sizes[i]])
			}
			if eps[i].DstToString() != b.LocalAddrPort().String() {
				t.Fatalf("from %s, want %s", eps[i].DstToString(), b.LocalAddrPort())
			}
			got++
		}
	}
	if err := b.Send([][]byte{{1}}, &wrongEndpoint{}); !errors.Is(err, conn.ErrWrongEndpointType) {
		t.Errorf("Send with foreign endpoint: %v", err)
	}
	ep6, _ := b.ParseEndpoint("[::1]:9")
	if err := b.Send([][]byte{{1}}, ep6); err == nil {
		t.Error("Send to IPv6 from IPv4 bind succeeded")
	}

	// Close unblocks the receive function with net.ErrClosed.
	recvErr := make(chan error, 1)
	go func() {
		_, err := fnsA[0](bufs, sizes, eps)
		recvErr <- err
	}()
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := testutil.Await(t, recvErr, testTimeout, "receive after close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("receive after Close: %v", err)
	}
	if err := a.Send([][]byte{{1}}, ep); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Send after Close: %v", err)
	}

	// Reopen on the same port and receive again.
	fnsA, port2, err := a.Open(portA)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if port2 != portA {
		t.Fatalf("reopened on %d, want %d", port2, portA)
	}
	if err := b.Send([][]byte{[]byte("again")}, ep); err != nil {
		t.Fatal(err)
	}
	k, err := fnsA[0](bufs[:1], sizes, eps)
	if err != nil || k != 1 || string(bufs[0][:sizes[0]]) != "again" {
		t.Fatalf("after reopen: %d %q %v", k, bufs[0][:sizes[0]], err)
	}
}

func TestBindIPv6(t *testing.T) {
	a := NewBind(netip.MustParseAddr("::1"))
	fns, port, err := a.Open(0)
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer a.Close()
	ep, err := a.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("::1"), port).String())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Send([][]byte{[]byte("x"), []byte("yz")}, ep); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 100), make([]byte, 100)}
	sizes := make([]int, 2)
	eps := make([]conn.Endpoint, 2)
	got := ""
	for len(got) < 3 {
		_ = a.udp.SetReadDeadline(time.Now().Add(testTimeout))
		k, err := fns[0](bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			got += string(bufs[i][:sizes[i]])
		}
	}
	if got != "xyz" {
		t.Fatalf("got %q", got)
	}
}

// TestBindTruncatesOversizeDatagrams: a datagram longer than the buffer it is read into (the
// carried wireguard-go's buffers are 9 KiB) is cut to the buffer's length, never reported longer,
// and the next datagram is read whole.
func TestBindTruncatesOversizeDatagrams(t *testing.T) {
	a := NewBind(netip.MustParseAddr("127.0.0.1"))
	fns, port, err := a.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ep, err := a.ParseEndpoint(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port).String())
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{0xab}, 20000)
	if err := a.Send([][]byte{big, []byte("small")}, ep); err != nil {
		t.Fatal(err)
	}
	bufs := [][]byte{make([]byte, 9216), make([]byte, 9216)}
	sizes := make([]int, 2)
	eps := make([]conn.Endpoint, 2)
	var got []int
	var last string
	for len(got) < 2 {
		_ = a.udp.SetReadDeadline(time.Now().Add(testTimeout))
		k, err := fns[0](bufs, sizes, eps)
		if err != nil {
			t.Fatal(err)
		}
		for i := range k {
			got = append(got, sizes[i])
			last = string(bufs[i][:sizes[i]])
		}
	}
	if got[0] != 9216 || got[1] != 5 || last != "small" {
		t.Fatalf("sizes %v, last %q; want [9216 5] and \"small\"", got, last)
	}
}

type wrongEndpoint struct{ conn.StdNetEndpoint }

// TestCloseAbortsStuckAccept: the client disappears after its SYN, so the
// exit's Accept blocks in the handshake; closing the exit ends it promptly.
func TestCloseAbortsStuckAccept(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h := newChanHandler()
	client, exit := newPair(t, Config{}, Config{Handler: h})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dialDone := make(chan struct{})
	go func() {
		defer close(dialDone)
		if c, err := client.stack.DialContext(ctx, "tcp", netip.MustParseAddrPort("192.0.2.1:22")); err == nil {
			c.Close()
		}
	}()
	f := testutil.Await(t, h.tcp, testTimeout, "flow")
	client.dev.Close() // no ACK will ever come
	cancel()
	<-dialDone
	acceptErr := make(chan error, 1)
	go func() {
		c, err := f.Accept()
		if err == nil {
			c.Close()
		}
		acceptErr <- err
	}()
	closed := make(chan struct{})
	go func() {
		exit.dev.Close()
		close(closed)
	}()
	testutil.Await(t, closed, testTimeout, "exit close")
	if err := testutil.Await(t, acceptErr, testTimeout, "accept to return"); err == nil {
		t.Error("Accept succeeded although the client is gone")
	}
}
