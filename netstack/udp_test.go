package netstack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// associatePair runs one UDP association request through a client/exit pair: the exit's side
// serves the connect service like the exit's connection actor does (read the request, AcceptUDP).
func associatePair(t testing.TB) (a *UDPAssociation, exitSock *UDPSocket, control net.Conn) {
	t.Helper()
	client, exit := newPair(t, Config{}, Config{})
	svc := netip.AddrPortFrom(exitAddr, DefaultConnPort)
	ln, err := exit.stack.ListenTCP(svc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type accepted struct {
		sock *UDPSocket
		ctl  net.Conn
		err  error
	}
	done := make(chan accepted, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- accepted{err: err}
			return
		}
		req, err := ReadConnectRequest(c)
		if err != nil || req.Cmd != ConnectCmdUDP {
			done <- accepted{err: errors.Join(err, errors.New("not a udp request"))}
			return
		}
		s, err := exit.stack.AcceptUDP(c, exitAddr, req.Port)
		done <- accepted{sock: s, ctl: c, err: err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	a, err = Dialer{Stack: client.stack, Service: svc}.AssociateUDP(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r := testutil.Await(t, done, testTimeout, "the exit's side")
	if r.err != nil {
		t.Fatal(r.err)
	}
	t.Cleanup(func() { a.Close(); r.sock.Close(); r.ctl.Close() })
	return a, r.sock, r.ctl
}

// TestUDPAssociation: the two sockets of an association exchange datagrams both ways, each
// checked; the exit's notices reach the client; Close unblocks a Read.
func TestUDPAssociation(t *testing.T) {
	a, exitSock, ctl := associatePair(t)
	buf := make([]byte, 2048)
	for i := range 50 {
		msg := testutil.PayloadBytes(uint64(i), 1+(i*97)%1300)
		if !udpExchange(t, a.Conn, exitSock, buf, msg) || !udpExchange(t, exitSock, a.Conn, buf, msg) {
			t.Fatalf("datagram %d lost five times", i)
		}
	}
	n := UDPNotice{Code: messages.ReplyNotAllowed, Host: "192.0.2.1", Port: 53}
	if err := WriteUDPNotice(ctl, n); err != nil {
		t.Fatal(err)
	}
	var nb NoticeBuffer
	got, err := ReadUDPNotice(a.Control, &nb)
	if got.Host = NoticeHost(&nb); err != nil || got != n {
		t.Fatalf("notice %+v, %v", got, err)
	}
	read := make(chan error, 1)
	go func() { _, err := exitSock.Read(buf); read <- err }()
	exitSock.Close()
	if err := testutil.Await(t, read, testTimeout, "Read to return after Close"); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v", err)
	}
	if _, err := exitSock.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v", err)
	}
}

// udpExchange sends msg from one socket and reads it on the other (UDP may drop: up to 5 tries of
// 2 s). UDPSocket has no deadlines, so one reader goroutine waits for the datagram throughout; a
// loss ends the test, whose cleanup closes the socket and so the reader.
func udpExchange(t testing.TB, from, to *UDPSocket, buf, msg []byte) bool {
	t.Helper()
	got := make(chan int, 1)
	go func() { n, _ := to.Read(buf); got <- n }()
	for range 5 {
		if _, err := from.Write(msg); err != nil {
			t.Fatal(err)
		}
		select {
		case n := <-got:
			if !bytes.Equal(buf[:n], msg) {
				t.Fatalf("got %d bytes, want %d", n, len(msg))
			}
			return true
		case <-time.After(2 * time.Second): // lost: send again; the reader still waits
		}
	}
	return false
}

// BenchmarkUDPSocket: one datagram each way per op through a WireGuard pair (allocs/op counts every
// goroutine's, wireguard-go's and gVisor's included).
func BenchmarkUDPSocket(b *testing.B) {
	a, exitSock, _ := associatePair(b)
	msg := testutil.PayloadBytes(1, 1200)
	buf := make([]byte, 2048)
	b.ReportAllocs()
	b.SetBytes(int64(2 * len(msg)))
	for b.Loop() {
		a.Conn.Write(msg)
		exitSock.Read(buf)
		exitSock.Write(msg)
		a.Conn.Read(buf)
	}
}
