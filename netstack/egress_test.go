package netstack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

func TestEgressPolicyCheck(t *testing.T) {
	def := &EgressPolicy{}
	refused := []string{"127.0.0.1", "::1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "fd00::1", "169.254.169.254",
		"fe80::1", "100.64.0.1", "224.0.0.1", "ff02::1", "255.255.255.255", "0.0.0.0", "::", "0.1.2.3", "::ffff:127.0.0.1", "::ffff:10.0.0.1"}
	for _, a := range refused {
		if err := def.Check(netip.MustParseAddr(a)); !errors.Is(err, ErrEgressDenied) {
			t.Errorf("default policy allowed %s", a)
		}
	}
	for _, a := range []string{"1.1.1.1", "93.184.216.34", "2606:4700::1111", "100.128.0.1", "172.32.0.1"} {
		if err := def.Check(netip.MustParseAddr(a)); err != nil {
			t.Errorf("default policy refused %s: %v", a, err)
		}
	}
	p := &EgressPolicy{AllowLoopback: true, AllowPrivate: true, Allow: []netip.Prefix{netip.MustParsePrefix("169.254.1.0/24")},
		Deny: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16"), netip.MustParsePrefix("1.1.1.1/32")}}
	for a, ok := range map[string]bool{"127.0.0.1": true, "10.1.1.1": true, "10.9.1.1": false, "1.1.1.1": false,
		"169.254.1.7": true, "169.254.2.7": false, "100.64.0.1": false} {
		if err := p.Check(netip.MustParseAddr(a)); (err == nil) != ok {
			t.Errorf("policy on %s: %v, want allowed=%v", a, err, ok)
		}
	}
}

// TestEgressChecksDialedAddress: a name that resolves to a refused address is refused.
func TestEgressChecksDialedAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = (&EgressPolicy{}).DialEgress(ctx, "tcp", "localhost", port, time.Second)
	if ReplyCodeForDial(err) != messages.ReplyNotAllowed {
		t.Fatalf("dial localhost: %v (code %d), want not allowed", err, ReplyCodeForDial(err))
	}
	c, err := (&EgressPolicy{AllowLoopback: true}).DialEgress(ctx, "tcp", "localhost", port, time.Second)
	if err != nil {
		t.Fatalf("allowed dial: %v", err)
	}
	c.Close()
	// A closed port is "connection refused".
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := uint16(ln2.Addr().(*net.TCPAddr).Port)
	ln2.Close()
	_, err = (&EgressPolicy{AllowLoopback: true}).DialEgress(ctx, "tcp", "127.0.0.1", closed, time.Second)
	if code := ReplyCodeForDial(err); code != messages.ReplyConnectionRefused {
		t.Fatalf("closed port: %v, code %d", err, code)
	}
	_, err = (&EgressPolicy{}).DialEgress(ctx, "tcp", "no-such-host.invalid", 80, time.Second)
	if code := ReplyCodeForDial(err); code != messages.ReplyHostUnreachable {
		t.Fatalf("unresolvable name: %v, code %d", err, code)
	}
}

func TestConnectProtocolRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	in := ConnectRequest{Cmd: ConnectCmdTCP, Host: "example.com", Port: 443}
	if err := writeConnectRequest(&buf, in); err != nil {
		t.Fatal(err)
	}
	got, err := ReadConnectRequest(&buf)
	if err != nil || got != in {
		t.Fatalf("got %+v, %v", got, err)
	}
	if err := WriteConnectReply(&buf, messages.ReplyNotAllowed); err != nil {
		t.Fatal(err)
	}
	if code, err := readConnectReply(&buf); err != nil || code != messages.ReplyNotAllowed {
		t.Fatalf("reply %d, %v", code, err)
	}
	for name, raw := range map[string][]byte{
		"short":       {'W', 1},
		"bad magic":   {'X', 1, 1, 0, 0, 80},
		"bad version": {'W', 9, 1, 0, 0, 80},
		"bad command": {'W', 1, 9, 0, 0, 80},
		"empty host":  {'W', 1, ConnectCmdTCP, 0, 0, 80},
		"port 0":      {'W', 1, ConnectCmdTCP, 1, 'a', 0, 0},
		"truncated":   {'W', 1, ConnectCmdTCP, 10, 'a'},
	} {
		if _, err := ReadConnectRequest(bytes.NewReader(raw)); !errors.Is(err, ErrBadConnectRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := writeConnectRequest(&buf, ConnectRequest{Cmd: ConnectCmdTCP, Host: string(make([]byte, 256)), Port: 1}); err == nil {
		t.Error("256-byte host accepted")
	}
}

func FuzzReadConnectRequest(f *testing.F) {
	f.Add([]byte{'W', 1, ConnectCmdTCP, 3, 'a', '.', 'b', 0, 80})
	f.Add([]byte{'W', 1, ConnectCmdPing, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ReadConnectRequest(bytes.NewReader(data))
		if err == nil && req.Cmd == ConnectCmdTCP && (req.Host == "" || req.Port == 0) {
			t.Fatalf("accepted %+v", req)
		}
	})
}
