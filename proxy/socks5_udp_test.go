package proxy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

func TestParseUDPHeader(t *testing.T) {
	v4 := []byte{0, 0, 0, 1, 192, 0, 2, 7, 0x1F, 0x90}
	v6 := append([]byte{0, 0, 0, 4}, netip.MustParseAddr("2001:db8::1").AsSlice()...)
	v6 = append(v6, 0, 53)
	dom := append([]byte{0, 0, 0, 3, 9}, "a.example"...)
	dom = append(dom, 1, 187)
	for _, tc := range []struct {
		name  string
		b     []byte
		addr  string
		dom   string
		port  uint16
		frag  byte
		len   int
		valid bool
	}{
		{"ipv4", append(v4, 'x'), "192.0.2.7", "", 8080, 0, 10, true},
		{"ipv6", v6, "2001:db8::1", "", 53, 0, 22, true},
		{"domain", append(dom, "payload"...), "", "a.example", 443, 0, 16, true},
		{"frag", []byte{0, 0, 1, 1, 192, 0, 2, 7, 0, 80}, "192.0.2.7", "", 80, 1, 10, true},
		{"rsv", []byte{0, 1, 0, 1, 192, 0, 2, 7, 0, 80}, "", "", 0, 0, 0, false},
		{"short", []byte{0, 0, 0}, "", "", 0, 0, 0, false},
		{"truncated-ipv4", []byte{0, 0, 0, 1, 192, 0, 2, 7, 0}, "", "", 0, 0, 0, false},
		{"truncated-ipv6", v6[:21], "", "", 0, 0, 0, false},
		{"truncated-domain", dom[:14], "", "", 0, 0, 0, false},
		{"empty-domain", []byte{0, 0, 0, 3, 0, 0, 80}, "", "", 0, 0, 0, false},
		{"domain-bracket", append(append([]byte{0, 0, 0, 3, 3}, "a]b"...), 0, 53), "", "", 0, 0, 0, false},
		{"domain-space", append(append([]byte{0, 0, 0, 3, 3}, "a b"...), 0, 53), "", "", 0, 0, 0, false},
		{"port-zero", []byte{0, 0, 0, 1, 192, 0, 2, 7, 0, 0}, "", "", 0, 0, 0, false},
		{"atyp", []byte{0, 0, 0, 9, 192, 0, 2, 7, 0, 80}, "", "", 0, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseUDPHeader(tc.b)
			if (err == nil) != tc.valid {
				t.Fatalf("err %v, want valid=%v", err, tc.valid)
			}
			if !tc.valid {
				if !errors.Is(err, ErrBadUDPHeader) {
					t.Fatalf("err %v is not ErrBadUDPHeader", err)
				}
				return
			}
			if tc.addr != "" && h.Addr.String() != tc.addr || string(h.Domain) != tc.dom || h.Port != tc.port || h.Frag != tc.frag || h.Len != tc.len {
				t.Fatalf("parsed %+v (domain %q)", h, h.Domain)
			}
		})
	}
}

func TestPutUDPHeader(t *testing.T) {
	for _, s := range []string{"192.0.2.7:53", "[::ffff:192.0.2.7]:53", "[2001:db8::1]:443"} {
		a := netip.MustParseAddrPort(s)
		b := make([]byte, 22)
		n := PutUDPHeader(b, a)
		if n != UDPHeaderLen(a) {
			t.Fatalf("%s: wrote %d, UDPHeaderLen %d", s, n, UDPHeaderLen(a))
		}
		h, err := ParseUDPHeader(b[:n])
		if err != nil || h.Addr != a.Addr().Unmap() || h.Port != a.Port() || h.Len != n {
			t.Fatalf("%s: round trip %+v %v", s, h, err)
		}
	}
}

func FuzzUDPHeader(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 192, 0, 2, 7, 0x1F, 0x90})
	f.Add(append([]byte{0, 0, 0, 3, 1, 'a', 0, 80}, "x"...))
	f.Add(append([]byte{0, 0, 0, 4}, make([]byte, 18)...))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseUDPHeader(b)
		if err != nil {
			return
		}
		if h.Len > len(b) || h.Port == 0 {
			t.Fatalf("header %+v from %d bytes", h, len(b))
		}
		if h.Domain == nil && b[3] == atypIPv4 { // an IPv4 header is written back byte for byte
			out := make([]byte, 22)
			n := PutUDPHeader(out, netip.AddrPortFrom(h.Addr, h.Port))
			out[2] = h.Frag
			if !bytes.Equal(out[:n], b[:h.Len]) {
				t.Fatalf("rewritten % x, parsed from % x", out[:n], b[:h.Len])
			}
		}
	})
}

func TestUDPSessionAccept(t *testing.T) {
	client := netip.MustParseAddr("127.0.0.1")
	s := &UDPSession{client: client}
	if s.accept(netip.MustParseAddrPort("127.0.0.2:4000")) {
		t.Fatal("another IP accepted")
	}
	if !s.accept(netip.MustParseAddrPort("127.0.0.1:4000")) || s.Client().Port() != 4000 {
		t.Fatalf("first datagram from the client's IP not accepted or port not fixed: %v", s.Client())
	}
	if s.accept(netip.MustParseAddrPort("127.0.0.1:4001")) {
		t.Fatal("another port of the client's IP accepted after the first datagram")
	}
	if !s.accept(netip.MustParseAddrPort("[::ffff:127.0.0.1]:4000")) {
		t.Fatal("the client's address as IPv4-mapped IPv6 refused")
	}
	named := &UDPSession{client: client}
	named.port.Store(5000)
	if named.accept(netip.MustParseAddrPort("127.0.0.1:4000")) || !named.accept(netip.MustParseAddrPort("127.0.0.1:5000")) {
		t.Fatal("a port named in the request is not the only one accepted")
	}
}

// udpCount is a UDPCounter for tests.
type udpCount struct {
	in, out atomic.Int64
	mu      sync.Mutex
	drops   map[messages.DropReason]int
}

func (c *udpCount) In(int)  { c.in.Add(1) }
func (c *udpCount) Out(int) { c.out.Add(1) }
func (c *udpCount) Drop(r messages.DropReason) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.drops == nil {
		c.drops = map[messages.DropReason]int{}
	}
	c.drops[r]++
}

func (c *udpCount) dropped(r messages.DropReason) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.drops[r]
}

// serveUDP runs an association's two loops against h.udpUp until the control connection ends.
func (h *harness) serveUDP(c net.Conn, s *UDPSession) {
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = s.RelayFromClient(h.udpUp, h.udpCount) }()
	go func() { defer wg.Done(); _ = s.RelayToClient(h.udpUp, h.udpCount) }()
	_, _ = io.Copy(io.Discard, c)
	_ = s.Relay.Close()
	_ = h.udpUp.SetReadDeadline(time.Unix(1, 0)) // the tunnel side is the test's: unblock its reader
	wg.Wait()
	c.Close()
}

// udpPair is two connected UDP sockets on loopback.
func udpPair(t *testing.T) (a, b *net.UDPConn) {
	t.Helper()
	a, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	b, err = net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, a.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestSOCKS5UDPAssociate: the reply names a relay on the address the client reached the proxy on;
// the relay passes the client's datagrams to the tunnel side unchanged and back, and drops a
// foreign sender's, fragments and malformed headers, counting each.
func TestSOCKS5UDPAssociate(t *testing.T) {
	exit, up := udpPair(t)
	var count udpCount
	var assocs atomic.Int32
	h := startHarness(t, &harness{kind: SOCKS5, dial: func(context.Context, Target) (net.Conn, error) {
		return nil, errors.New("must not dial")
	}, opts: Options{Associate: func(context.Context) error { assocs.Add(1); return nil }}, udpUp: up, udpCount: &count})
	c := dialTCP(t, h.addr())
	c.Write(cat(greetNoAuth, socksReq(cmdUDPAssociate, atypIPv4, []byte{0, 0, 0, 0}, 0)))
	rep := make([]byte, 2+10)
	if _, err := io.ReadFull(c, rep); err != nil {
		t.Fatal(err)
	}
	if rep[3] != 0 || rep[5] != atypIPv4 || !bytes.Equal(rep[6:10], []byte{127, 0, 0, 1}) {
		t.Fatalf("reply % x", rep)
	}
	relay := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), binary.BigEndian.Uint16(rep[10:12]))
	r := h.result(t)
	if r.err != nil || r.s.UDP == nil || r.s.Method != "UDP ASSOCIATE" || assocs.Load() != 1 {
		t.Fatalf("session %+v, err %v, %d associate calls", r.s, r.err, assocs.Load())
	}
	if got := r.s.UDP.Relay.LocalAddr().(*net.UDPAddr).AddrPort(); got != relay {
		t.Fatalf("relay bound on %v, reply names %v", got, relay)
	}

	client, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer client.Close()
	foreign, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	defer foreign.Close()
	dst := netip.MustParseAddrPort("192.0.2.9:53")
	hdr := make([]byte, 10)
	PutUDPHeader(hdr, dst)
	msg := cat(hdr, []byte("query"))
	foreign.WriteToUDPAddrPort([]byte{0, 0, 0, 9}, relay) // malformed, from the client's IP: fixes nothing
	client.WriteToUDPAddrPort(msg, relay)                 // fixes the client's port
	buf := make([]byte, 2048)
	exit.SetReadDeadline(time.Now().Add(testTimeout))
	n, from, err := exit.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], msg) {
		t.Fatalf("tunnel side got % x (%v)", buf[:n], err)
	}
	foreign.WriteToUDPAddrPort(msg, relay)
	client.WriteToUDPAddrPort(cat([]byte{0, 0, 1}, msg[3:]), relay) // FRAG 1
	client.WriteToUDPAddrPort([]byte{0, 0, 0, 7, 1}, relay)         // unknown address type
	client.WriteToUDPAddrPort(cat(hdr, []byte("second")), relay)
	n, _, err = exit.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[10:n]) != "second" {
		t.Fatalf("after the dropped ones, the tunnel side got %q (%v): a dropped datagram went through", buf[:n], err)
	}
	// Back: the exit's answer reaches the client unchanged.
	back := cat(hdr, []byte("answer"))
	exit.WriteToUDPAddrPort(back, from)
	client.SetReadDeadline(time.Now().Add(testTimeout))
	n, _, err = client.ReadFromUDPAddrPort(buf)
	if err != nil || !bytes.Equal(buf[:n], back) {
		t.Fatalf("client got % x (%v)", buf[:n], err)
	}
	// The relay counts a datagram after its send returned: the receiver may see it first.
	testutil.Eventually(t, testTimeout, "drops and datagrams counted", func() bool {
		return count.dropped(messages.DropForeignSource) == 1 && count.dropped(messages.DropFragmented) == 1 &&
			count.dropped(messages.DropMalformed) == 2 && count.in.Load() == 2 && count.out.Load() == 1
	})
	c.Close()
}

// TestSOCKS5UDPAssociateRefused: a domain as the client's address gets 0x08; an Associate that
// fails answers with its reply code; RefuseWith refuses UDP ASSOCIATE with its error's code.
func TestSOCKS5UDPAssociateRefused(t *testing.T) {
	h := startHarness(t, &harness{kind: SOCKS5, dial: func(context.Context, Target) (net.Conn, error) {
		return nil, errors.New("must not dial")
	}, opts: Options{Associate: func(context.Context) error { return overloadErr{} }}})
	got := socksExchange(t, h, cat(greetNoAuth, socksReq(cmdUDPAssociate, atypDomain, []byte("a.test"), 0)))
	if want := cat([]byte{5, 0}, failReply(messages.ReplyAddressNotSupported)); !bytes.Equal(got, want) {
		t.Fatalf("domain: % x, want % x", got, want)
	}
	h.result(t)
	// Another host's address as the client's: its datagrams would be taken and answered.
	got = socksExchange(t, h, cat(greetNoAuth, socksReq(cmdUDPAssociate, atypIPv4, []byte{192, 0, 2, 1}, 5000)))
	if want := cat([]byte{5, 0}, failReply(messages.ReplyNotAllowed)); !bytes.Equal(got, want) {
		t.Fatalf("another host's address: % x, want % x", got, want)
	}
	h.result(t)
	got = socksExchange(t, h, cat(greetNoAuth, socksReq(cmdUDPAssociate, atypIPv4, []byte{0, 0, 0, 0}, 0)))
	if want := cat([]byte{5, 0}, failReply(messages.ReplyGeneralFailure)); !bytes.Equal(got, want) {
		t.Fatalf("refused: % x, want % x", got, want)
	}
	if r := h.result(t); !errors.Is(r.err, ErrDial) {
		t.Fatalf("refused: %v", r.err)
	}
	ref := startHarness(t, &harness{kind: SOCKS5, refuse: errors.Join(errors.New("x"), deniedErr{}), refused: true,
		opts: Options{Associate: func(context.Context) error { return nil }}})
	got = socksExchange(t, ref, cat(greetNoAuth, socksReq(cmdUDPAssociate, atypIPv4, []byte{0, 0, 0, 0}, 0)))
	if want := cat([]byte{5, 0}, failReply(messages.ReplyNotAllowed)); !bytes.Equal(got, want) {
		t.Fatalf("RefuseWith: % x, want % x", got, want)
	}
}

type deniedErr struct{}

func (deniedErr) Error() string                 { return "denied" }
func (deniedErr) ReplyCode() messages.ReplyCode { return messages.ReplyNotAllowed }
