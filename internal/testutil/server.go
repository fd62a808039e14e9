package testutil

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"testing"
)

// Handler serves one accepted connection. done is closed when the server closes: a handler that
// blocks on anything but the connection should give up then. The server closes c after the
// handler returns.
type Handler func(c *net.TCPConn, done <-chan struct{})

// Server is a TCP accept loop running a Handler per connection. Close (also run at the test's
// cleanup) closes the listener and every open connection, then waits for the handlers.
type Server struct {
	ln    net.Listener
	done  chan struct{}
	wg    sync.WaitGroup
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	once  sync.Once
}

// Serve starts a Server on 127.0.0.1 with a random port.
func Serve(t testing.TB, handle Handler) *Server {
	t.Helper()
	return ServeAt(t, "127.0.0.1:0", handle)
}

// ServeAt starts a Server on addr ("[::1]:0" for IPv6 loopback, say).
func ServeAt(t testing.TB, addr string, handle Handler) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{ln: ln, done: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.accept(handle)
	t.Cleanup(s.Close)
	return s
}

func (s *Server) accept(handle Handler) {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		select {
		case <-s.done:
			s.mu.Unlock()
			c.Close()
			return
		default:
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			handle(c.(*net.TCPConn), s.done)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// AddrPort is the server's address.
func (s *Server) AddrPort() netip.AddrPort { return s.ln.Addr().(*net.TCPAddr).AddrPort() }

// Port is the server's port.
func (s *Server) Port() uint16 { return s.AddrPort().Port() }

// Close stops accepting, closes every open connection and waits for the handlers; it may be
// called more than once.
func (s *Server) Close() {
	s.once.Do(func() {
		s.mu.Lock()
		close(s.done)
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.ln.Close()
		s.wg.Wait()
	})
}

// Echo is a Handler that writes back what it reads until EOF or an error. It copies through its
// own buffer: io.Copy between TCP connections splices through pipes that Go pools until a GC,
// which would show as open descriptors.
func Echo(c *net.TCPConn, _ <-chan struct{}) {
	buf := make([]byte, 4096)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			if _, werr := c.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Sink is a Handler that discards what it reads and, at EOF, answers with the byte count (8 bytes,
// big endian).
func Sink(c *net.TCPConn, _ <-chan struct{}) {
	buf := make([]byte, 256<<10) // large reads: the sink should cost a benchmark little
	var n int64
	var err error
	for {
		k, rerr := c.Read(buf)
		n += int64(k)
		if rerr != nil {
			if rerr != io.EOF {
				err = rerr
			}
			break
		}
	}
	if err == nil {
		_ = binary.Write(c, binary.BigEndian, n)
	}
}

// EchoServer is Serve(t, Echo).
func EchoServer(t testing.TB) *Server {
	t.Helper()
	return Serve(t, Echo)
}

// SinkServer is Serve(t, Sink).
func SinkServer(t testing.TB) *Server {
	t.Helper()
	return Serve(t, Sink)
}

// UDPEchoServer sends every datagram back to its sender, on 127.0.0.1 with a random port, until
// the test's cleanup closes it (and waits for its goroutine). It returns its address.
func UDPEchoServer(t testing.TB) netip.AddrPort {
	t.Helper()
	return UDPEchoServerOn(t, "127.0.0.1:0")
}

// UDPEchoServerOn is UDPEchoServer on addr ("[::1]:0" for IPv6 loopback, say).
func UDPEchoServerOn(t testing.TB, addr string) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65535)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Listen holds a TCP port on 127.0.0.1 that accepts nothing (connections queue in the backlog)
// until the test's cleanup closes it: an address in use.
func Listen(t testing.TB) net.Listener {
	t.Helper()
	return ListenOn(t, "127.0.0.1:0")
}

// ListenOn is Listen on addr.
func ListenOn(t testing.TB, addr string) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// ClosedAddr returns a TCP address on 127.0.0.1 that nothing listens on right now (connections
// to it are refused).
func ClosedAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()
	return addr
}

// FreeUDPAddr returns a UDP address on 127.0.0.1 that is free right now.
func FreeUDPAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// FreePortRange finds n consecutive free TCP ports on 127.0.0.1 (each bound and released once) and
// returns them as a pool range, "127.0.0.1:first-last". They lie below the ephemeral range (32768
// and up here), where outgoing connections take theirs.
func FreePortRange(t testing.TB, n int) string {
	t.Helper()
	for range 50 {
		base := 10000 + rand.IntN(22000-n)
		ok := true
		for p := base; p < base+n && ok; p++ {
			c, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			c.Close()
		}
		if ok {
			return fmt.Sprintf("127.0.0.1:%d-%d", base, base+n-1)
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return ""
}
