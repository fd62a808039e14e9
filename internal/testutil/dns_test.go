package testutil

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"
)

// TestDNSServer asks the server directly (no proxy) for A, AAAA and an unknown name.
func TestDNSServer(t *testing.T) {
	v4, v6 := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")
	srv := DNSServer(t, map[string][]netip.Addr{"Host.Test": {v4, v6}})
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for i, q := range []struct {
		name  string
		typ   dnsmessage.Type
		want  []netip.Addr
		rcode dnsmessage.RCode
	}{
		{"host.test", dnsmessage.TypeA, []netip.Addr{v4}, dnsmessage.RCodeSuccess},
		{"HOST.test.", dnsmessage.TypeAAAA, []netip.Addr{v6}, dnsmessage.RCodeSuccess},
		{"host.test", dnsmessage.TypeMX, nil, dnsmessage.RCodeSuccess},
		{"nope.test", dnsmessage.TypeA, nil, dnsmessage.RCodeNameError},
	} {
		id := uint16(100 + i)
		if _, err := c.WriteToUDPAddrPort(DNSQuery(id, q.name, q.typ), srv); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 1500)
		n, _, err := c.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		gotID, addrs, rcode, err := ParseDNSAnswer(buf[:n])
		if err != nil || gotID != id || rcode != q.rcode || !slices.Equal(addrs, q.want) {
			t.Errorf("%s %v: id %d addrs %v rcode %v err %v; want id %d addrs %v rcode %v", q.name, q.typ, gotID, addrs, rcode, err, id, q.want, q.rcode)
		}
	}
}
