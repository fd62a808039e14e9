package netstack

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
)

type closeWriter interface{ CloseWrite() error }

// TestTCPBothWaysHalfClose moves 16 MiB each way at once; the client then
// half-closes, the server sees EOF and still answers with the hash of what it
// got, which the client reads after its own CloseWrite.
func TestTCPBothWaysHalfClose(t *testing.T) {
	for _, tc := range []struct {
		name   string
		server netip.Addr
	}{{"ipv4", exitAddr}, {"ipv6", exitAddr6}} {
		t.Run(tc.name, func(t *testing.T) {
			size := int64(16 << 20)
			if tc.name == "ipv6" {
				size = 2 << 20
			}
			client, exit := newPair(t, Config{}, Config{})
			testTCPBothWays(t, client, exit, tc.server, size)
		})
	}
}

func testTCPBothWays(t *testing.T, client, exit *wgNode, server netip.Addr, size int64) {
	ln, err := exit.stack.ListenTCP(netip.AddrPortFrom(server, 8080))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	type result struct {
		got [32]byte
		err error
	}
	srvDone := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- result{err: err}
			return
		}
		defer c.Close()
		wrote := make(chan error, 1)
		go func() {
			_, err := io.Copy(c, testutil.Payload(2, size))
			wrote <- err
		}()
		h := sha256.New()
		_, err = io.Copy(h, c) // until the client's CloseWrite
		if werr := <-wrote; err == nil {
			err = werr
		}
		var r result
		h.Sum(r.got[:0])
		if err == nil {
			_, err = c.Write(r.got[:]) // reply after EOF
		}
		r.err = err
		srvDone <- r
	}()

	c := client.dial(t, "tcp", netip.AddrPortFrom(server, 8080))
	defer c.Close()
	if got := c.RemoteAddr().String(); got != netip.AddrPortFrom(server, 8080).String() {
		t.Errorf("RemoteAddr = %s", got)
	}
	_ = c.SetDeadline(time.Now().Add(testTimeout))
	sent := make(chan error, 1)
	go func() {
		_, err := io.Copy(c, testutil.Payload(1, size))
		if err == nil {
			err = c.(closeWriter).CloseWrite()
		}
		sent <- err
	}()
	h := sha256.New()
	n, err := io.CopyN(h, c, size)
	if err != nil {
		t.Fatalf("client read %d of %d: %v", n, size, err)
	}
	var reply [32]byte
	if _, err := io.ReadFull(c, reply[:]); err != nil {
		t.Fatalf("reply after half-close: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("after reply: %v, want EOF", err)
	}
	if err := testutil.Await(t, sent, testTimeout, "client send"); err != nil {
		t.Fatal(err)
	}
	r := testutil.Await(t, srvDone, testTimeout, "server")
	if r.err != nil {
		t.Fatal(r.err)
	}
	want1, want2 := testutil.PayloadSum(1, size), testutil.PayloadSum(2, size)
	if hex.EncodeToString(r.got[:]) != want1 || hex.EncodeToString(reply[:]) != want1 {
		t.Errorf("client->server sha256 mismatch: server saw %x, replied %x, want %s", r.got, reply, want1)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want2 {
		t.Errorf("server->client sha256 = %s, want %s", got, want2)
	}
}

// TestUDPBothWays ping-pongs datagrams of varying size and counts them on
// both sides.
func TestUDPBothWays(t *testing.T) {
	client, exit := newPair(t, Config{}, Config{})
	srvAddr := netip.AddrPortFrom(exitAddr, 5353)
	pc, err := exit.stack.ListenUDP(srvAddr)
	if err != nil {
		t.Fatal(err)
	}
	const count = 200
	srvDone := make(chan int, 1)
	go func() {
		buf := make([]byte, 2048)
		seen := make(map[uint32]bool)
		for len(seen) < count {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				break
			}
			if n < 4 {
				continue
			}
			seen[binary.BigEndian.Uint32(buf)] = true
			// Reply reversed so the client can tell an echo from a transform.
			out := append([]byte("re:"), buf[:n]...)
			if _, err := pc.WriteTo(out, from); err != nil {
				break
			}
		}
		srvDone <- len(seen)
	}()
	defer pc.Close()

	c := client.dial(t, "udp", srvAddr)
	defer c.Close()
	got := 0
	buf := make([]byte, 2048)
	for i := range count {
		msg := make([]byte, 4+(i*37)%1300)
		binary.BigEndian.PutUint32(msg, uint32(i))
		for j := 4; j < len(msg); j++ {
			msg[j] = byte(i + j)
		}
		want := append([]byte("re:"), msg...)
		if udpRoundTrip(t, c, buf, msg, want, fmt.Sprintf("datagram %d", i)) {
			got++
		}
	}
	if got != count {
		t.Errorf("client got %d replies, want %d", got, count)
	}
	if seen := testutil.Await(t, srvDone, testTimeout, "server"); seen != count {
		t.Errorf("server saw %d distinct datagrams, want %d", seen, count)
	}
}

// TestDialErrors checks argument validation.
func TestDialErrors(t *testing.T) {
	s, err := New(Config{Addresses: []netip.Addr{clientAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for _, tc := range []struct {
		network string
		addr    netip.AddrPort
	}{
		{"sctp", netip.MustParseAddrPort("10.0.0.1:1")},
		{"tcp", netip.AddrPort{}},
		{"udp", netip.MustParseAddrPort("10.0.0.1:0")},
	} {
		if c, err := s.DialContext(ctx, tc.network, tc.addr); err == nil {
			c.Close()
			t.Errorf("DialContext(%s, %v) succeeded", tc.network, tc.addr)
		}
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New without addresses succeeded")
	}
	if _, err := New(Config{Addresses: []netip.Addr{clientAddr}, MTU: 100}); err == nil {
		t.Error("New with MTU 100 succeeded")
	}
}

// TestWriteGarbage feeds malformed packets; they are dropped without harm and
// the stack still works afterwards.
func TestWriteGarbage(t *testing.T) {
	// The exit role (promiscuous, forwarders) parses more of each packet.
	exit, err := New(Config{Addresses: []netip.Addr{exitAddr}, Handler: rejectAll{}})
	if err != nil {
		t.Fatal(err)
	}
	defer exit.Close()
	writeGarbage(t, exit)

	s, err := New(Config{Addresses: []netip.Addr{clientAddr, clientAddr6}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	writeGarbage(t, s)

	// Still works: a datagram to our own address (looped inside the stack).
	pc, err := s.ListenUDP(netip.AddrPortFrom(clientAddr, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := s.DialContext(context.Background(), "udp", netip.AddrPortFrom(clientAddr, 9))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ok")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(testTimeout))
	buf := make([]byte, 8)
	n, _, err := pc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "ok" {
		t.Fatalf("after garbage: %q, %v", buf[:n], err)
	}
}

type rejectAll struct{}

func (rejectAll) HandleTCP(f *TCPFlow) { f.Reject() }
func (rejectAll) HandleUDP(f *UDPFlow) { f.Reject() }

func writeGarbage(t *testing.T, s *Stack) {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(1, 2))
	var bufs [][]byte
	protos := []byte{6, 17, 1, 58}
	for i := range 3000 {
		b := make([]byte, 4+rng.IntN(120))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		// Two thirds get a consistent IP header (length, protocol, a
		// destination in 192.0.2.0/24 or fd99::/64) over random transport
		// bytes, so the packets reach TCP, UDP and ICMP parsing.
		switch {
		case i%3 == 0 && len(b) >= 20:
			b[0] = 0x45
			binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
			b[6], b[7] = 0, 0 // no fragmentation
			b[9] = protos[rng.IntN(len(protos))]
			copy(b[16:], []byte{192, 0, 2, byte(i)})
		case i%3 == 1 && len(b) >= 40:
			b[0] = 0x60
			binary.BigEndian.PutUint16(b[4:], uint16(len(b)-40))
			b[6] = protos[rng.IntN(len(protos))]
			copy(b[24:], netip.MustParseAddr("fd99::2").AsSlice())
		}
		bufs = append(bufs, b)
	}
	bufs = append(bufs, nil, []byte{}, []byte{0x45})
	for i := 0; i < len(bufs); i += batchSize {
		n, err := s.Write(bufs[i:min(i+batchSize, len(bufs))], 0)
		if err != nil || n != min(batchSize, len(bufs)-i) {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if _, err := s.Write(bufs[:2], 1000); err != nil {
		t.Fatalf("Write with offset past the data: %v", err)
	}
}
