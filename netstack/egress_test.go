package netstack

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
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

// TestEgressSpecialPurposeRanges: every special-purpose range is refused by default, allowed by its
// switch and by an allow CIDR, and a deny CIDR wins over both.
func TestEgressSpecialPurposeRanges(t *testing.T) {
	cases := []struct {
		category string
		on       func(*EgressPolicy)
		addrs    []string
	}{
		{"loopback", func(p *EgressPolicy) { p.AllowLoopback = true }, []string{"127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"}},
		{"private", func(p *EgressPolicy) { p.AllowPrivate = true }, []string{"10.1.2.3", "172.16.0.1", "172.31.255.254",
			"192.168.1.1", "fd00::1", "fc00::1", "64:ff9b:1::808:808", "::ffff:10.0.0.1"}},
		{"link-local", func(p *EgressPolicy) { p.AllowLinkLocal = true }, []string{"169.254.169.254", "fe80::1", "febf::1"}},
		{"CGNAT", func(p *EgressPolicy) { p.AllowCGNAT = true }, []string{"100.64.0.1", "100.127.255.254"}},
		{"multicast or broadcast", func(p *EgressPolicy) { p.AllowMulticast = true }, []string{"224.0.0.1", "239.1.2.3",
			"255.255.255.255", "ff02::1", "ff0e::1"}},
		{"documentation", func(p *EgressPolicy) { p.AllowDocumentation = true }, []string{"192.0.2.1", "198.51.100.7",
			"203.0.113.200", "2001:db8::1", "2001:db8:ffff::1", "3fff::1", "3fff:fff::1"}},
		{"benchmarking", func(p *EgressPolicy) { p.AllowBenchmarking = true }, []string{"198.18.0.1", "198.19.255.254", "2001:2::1"}},
		{"reserved", func(p *EgressPolicy) { p.AllowReserved = true }, []string{"0.1.2.3", "0.255.255.255", "192.0.0.8",
			"192.0.0.170", "240.0.0.1", "254.1.2.3", "255.255.255.254", "100::1", "5f00::1", "fec0::1", "2001:0:808:808::fefd:fcfb",
			"2001:10::1", "4000::1", "200::1"}},
	}
	for _, tc := range cases {
		for _, s := range tc.addrs {
			a := netip.MustParseAddr(s)
			err := (&EgressPolicy{}).Check(a)
			if !errors.Is(err, ErrEgressDenied) || !strings.Contains(err.Error(), tc.category) {
				t.Errorf("%s: default policy: %v, want refused as %s", s, err, tc.category)
			}
			on := &EgressPolicy{}
			tc.on(on)
			if err := on.Check(a); err != nil {
				t.Errorf("%s: refused with its %s switch on: %v", s, tc.category, err)
			}
			single := netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
			if err := (&EgressPolicy{Allow: []netip.Prefix{single}}).Check(a); err != nil {
				t.Errorf("%s: refused though allowed by CIDR %s: %v", s, single, err)
			}
			denied := &EgressPolicy{Allow: []netip.Prefix{single}, Deny: []netip.Prefix{single}}
			tc.on(denied)
			if err := denied.Check(a); !errors.Is(err, ErrEgressDenied) || !strings.Contains(err.Error(), "denied range") {
				t.Errorf("%s: deny did not win over switch and allow: %v", s, err)
			}
		}
	}
	// Every switch on: only the special-purpose ranges' neighbours and globally reachable parts
	// were ever allowed, and still are.
	all := &EgressPolicy{}
	for _, tc := range cases {
		tc.on(all)
	}
	for _, s := range []string{"1.1.1.1", "93.184.216.34", "100.128.0.1", "172.32.0.1", "192.0.1.1", "192.0.3.1",
		"198.17.255.255", "198.20.0.1", "223.255.255.255", "2606:4700::1111", "2001:4:112::1", "2001:1::1",
		"2001:20::1", "2001:db9::1", "2002:0808:0808::1", "64:ff9b::808:808", "2001:3::1"} {
		a := netip.MustParseAddr(s)
		if err := (&EgressPolicy{}).Check(a); err != nil {
			t.Errorf("default policy refused the global %s: %v", s, err)
		}
		if err := all.Check(a); err != nil {
			t.Errorf("every switch on: refused %s: %v", s, err)
		}
	}
	// The unspecified addresses mean this host: never dialed, whatever the policy says.
	for _, s := range []string{"0.0.0.0", "::", "::ffff:0.0.0.0", "64:ff9b::"} {
		p := &EgressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}}
		for _, tc := range cases {
			tc.on(p)
		}
		if err := p.Check(netip.MustParseAddr(s)); !errors.Is(err, ErrEgressDenied) {
			t.Errorf("%s allowed", s)
		}
	}
}

// TestEgressEmbeddedIPv4: an IPv6 address that reaches an IPv4 address (mapped, NAT64, 6to4,
// Teredo, compatible, translated) is refused when that IPv4 address is, by its category or a deny
// entry, and allowed when the IPv4 address is.
func TestEgressEmbeddedIPv4(t *testing.T) {
	def := &EgressPolicy{}
	refused := map[string]string{
		"::ffff:127.0.0.1":               "loopback",
		"::ffff:192.168.0.1":             "private",
		"64:ff9b::7f00:1":                "loopback", // NAT64 of 127.0.0.1
		"64:ff9b::a00:1":                 "private",  // 10.0.0.1
		"64:ff9b::a9fe:a9fe":             "link-local",
		"64:ff9b::c000:201":              "documentation", // 192.0.2.1
		"64:ff9b::6440:1":                "CGNAT",
		"2002:7f00:1::1":                 "loopback", // 6to4 of 127.0.0.1
		"2002:c0a8:101::1":               "private",  // 192.168.1.1
		"2002:a9fe:a9fe:1::":             "link-local",
		"::ffff:0:a00:1":                 "reserved", // IPv4-translated form: reserved itself
		"::a00:1":                        "reserved", // IPv4-compatible
		"2001:0:7f00:1::":                "reserved", // Teredo: reserved itself
		"64:ff9b::ffff:ffff":             "multicast or broadcast",
		"64:ff9b::f000:1":                "reserved",
		"64:ff9b::c612:1":                "benchmarking",
		"2002:0000:0001::1":              "reserved", // 6to4 of 0.0.0.1
		"2002:e000:0001::1":              "multicast or broadcast",
		"64:ff9b::c0a8:1%eth0":           "private", // a zone does not hide the address
		"::ffff:172.16.5.4":              "private",
		"2002:ac10:0504:ffff:ffff::ffff": "private",
	}
	for s, why := range refused {
		err := def.Check(netip.MustParseAddr(s))
		if !errors.Is(err, ErrEgressDenied) || !strings.Contains(err.Error(), why) {
			t.Errorf("%s: %v, want refused as %s", s, err, why)
		}
	}
	// The embedded address's own switch or CIDR allows the IPv6 form; reserved forms need their switch too.
	p := &EgressPolicy{AllowLoopback: true, Allow: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}}
	for _, s := range []string{"64:ff9b::7f00:1", "2002:7f00:1::1", "64:ff9b::a00:1", "2002:a00:1::1"} {
		if err := p.Check(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: %v, want allowed by the embedded address's switch or CIDR", s, err)
		}
	}
	if err := p.Check(netip.MustParseAddr("::ffff:0:a00:1")); !errors.Is(err, ErrEgressDenied) {
		t.Errorf("IPv4-translated form allowed without allow_reserved: %v", err)
	}
	teredo := &EgressPolicy{AllowReserved: true}
	// Teredo 2001:0:SERVER::~CLIENT: server 8.8.8.8 and client 1.2.3.4 are fine, a private server or client is not.
	for s, ok := range map[string]bool{"2001:0:808:808::fefd:fcfb": true, "2001:0:a00:1::fefd:fcfb": false, "2001:0:808:808::f5ff:fffe": false} {
		if err := teredo.Check(netip.MustParseAddr(s)); (err == nil) != ok {
			t.Errorf("Teredo %s: %v, want allowed=%v", s, err, ok)
		}
	}
	// Allowing the IPv6 wrapper does not allow what it reaches.
	wrap := &EgressPolicy{Allow: []netip.Prefix{netip.MustParsePrefix("64:ff9b::/96"), netip.MustParsePrefix("2002::/16")}}
	for _, s := range []string{"64:ff9b::7f00:1", "2002:a00:1::1"} {
		if err := wrap.Check(netip.MustParseAddr(s)); !errors.Is(err, ErrEgressDenied) {
			t.Errorf("%s allowed through its wrapper's allow entry", s)
		}
	}
	// A deny entry for the IPv4 address refuses its IPv6 forms; mapped deny entries match IPv4.
	deny := &EgressPolicy{Deny: []netip.Prefix{netip.MustParsePrefix("8.8.8.0/24"), netip.MustParsePrefix("::ffff:1.1.1.1/128")}}
	for _, s := range []string{"8.8.8.8", "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1", "1.1.1.1", "64:ff9b::101:101"} {
		err := deny.Check(netip.MustParseAddr(s))
		if !errors.Is(err, ErrEgressDenied) || !strings.Contains(err.Error(), "denied range") {
			t.Errorf("%s: %v, want denied", s, err)
		}
	}
	if err := deny.Check(netip.MustParseAddr("64:ff9b::909:909")); err != nil {
		t.Errorf("NAT64 of 9.9.9.9 refused: %v", err)
	}
}

// TestEgressChecksDialedAddress: a name that resolves to a refused address is refused.
func TestEgressChecksDialedAddress(t *testing.T) {
	port := uint16(testutil.Listen(t).Addr().(*net.TCPAddr).Port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := (&EgressPolicy{}).DialEgress(ctx, "tcp", "localhost", port, time.Second)
	if ReplyCodeForDial(err) != messages.ReplyNotAllowed {
		t.Fatalf("dial localhost: %v (code %d), want not allowed", err, ReplyCodeForDial(err))
	}
	// IPv6 forms of a refused IPv4 address are checked as dialed, before any packet leaves.
	for _, host := range []string{"::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::1"} {
		_, err = (&EgressPolicy{}).DialEgress(ctx, "tcp", host, port, time.Second)
		if ReplyCodeForDial(err) != messages.ReplyNotAllowed || !errors.Is(err, ErrEgressDenied) {
			t.Fatalf("dial %s: %v (code %d), want not allowed", host, err, ReplyCodeForDial(err))
		}
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
		"udp host":    {'W', 1, ConnectCmdUDP, 1, 'a', 0, 80},
		"udp port 0":  {'W', 1, ConnectCmdUDP, 0, 0, 0},
	} {
		if _, err := ReadConnectRequest(bytes.NewReader(raw)); !errors.Is(err, ErrBadConnectRequest) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if err := writeConnectRequest(&buf, ConnectRequest{Cmd: ConnectCmdTCP, Host: string(make([]byte, 256)), Port: 1}); err == nil {
		t.Error("256-byte host accepted")
	}
}

func TestUDPNoticeRoundTrip(t *testing.T) {
	var buf bytes.Buffer
	want := []UDPNotice{{Code: messages.ReplyNotAllowed, Host: "192.0.2.1", Port: 53}, {Code: messages.ReplyHostUnreachable, Host: "no.such.test", Port: 443},
		{Code: messages.ReplyGeneralFailure, Host: "2001:db8::1", Port: 123}}
	for _, n := range want {
		if err := WriteUDPNotice(&buf, n); err != nil {
			t.Fatal(err)
		}
	}
	var nb NoticeBuffer
	for _, w := range want {
		got, err := ReadUDPNotice(&buf, &nb)
		if got.Host = NoticeHost(&nb); err != nil || got != w {
			t.Fatalf("got %+v (%v), want %+v", got, err, w)
		}
	}
	if _, err := ReadUDPNotice(&buf, &nb); err != io.EOF {
		t.Fatalf("after the last notice: %v, want EOF", err)
	}
	if _, err := ReadUDPNotice(bytes.NewReader([]byte{2, 5, 'a'}), &nb); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a cut notice: %v", err)
	}
	for name, raw := range map[string][]byte{"unknown code": {9, 1, 'a', 0, 53}, "empty host": {2, 0, 0, 53}} {
		if _, err := ReadUDPNotice(bytes.NewReader(raw), &nb); !errors.Is(err, ErrBadNotice) {
			t.Errorf("%s: %v, want ErrBadNotice", name, err)
		}
	}
	if err := WriteUDPNotice(&buf, UDPNotice{Code: messages.ReplyNotAllowed}); !errors.Is(err, ErrBadNotice) {
		t.Fatalf("a notice without a host: %v", err)
	}
	raw := []byte{2, 3, 'a', '.', 'b', 0, 53}
	r := bytes.NewReader(raw)
	if n := testing.AllocsPerRun(100, func() {
		r.Reset(raw)
		if _, err := ReadUDPNotice(r, &nb); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Fatalf("ReadUDPNotice allocates %v times", n)
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
		if err == nil && req.Cmd == ConnectCmdUDP && (req.Host != "" || req.Port == 0) {
			t.Fatalf("accepted %+v", req)
		}
	})
}

// Local-use NAT64 (64:ff9b:1::/48) reaches the IPv4 address in its last 32 bits: a refused one
// stays refused even with allow_private on (the switch for the NAT64 prefix itself).
func TestEgressLocalNAT64EmbeddedIPv4(t *testing.T) {
	p := EgressPolicy{AllowPrivate: true}
	for _, a := range []string{"64:ff9b:1::a9fe:a9fe", "64:ff9b:1::7f00:1", "64:ff9b:1:abcd::7f00:1"} {
		if err := p.Check(netip.MustParseAddr(a)); err == nil {
			t.Errorf("%s: allowed", a)
		}
	}
	if err := p.Check(netip.MustParseAddr("64:ff9b:1::808:808")); err != nil {
		t.Errorf("a public IPv4 through local-use NAT64: %v", err)
	}
}
