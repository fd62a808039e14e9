package testutil

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"

	"golang.org/x/net/dns/dnsmessage"
)

// DNSServer answers DNS queries over UDP on 127.0.0.1 (a random port) from records, until the
// test's cleanup closes it (and waits for its goroutine). Names are matched without case and
// with or without the final dot. A name it has answers A queries with its IPv4 addresses and AAAA
// queries with its IPv6 ones, in the order given (none: an empty NOERROR answer); any other type
// gets an empty NOERROR answer; a name it does not have gets NXDOMAIN. Datagrams that do not parse
// as a query are ignored. It returns its address.
func DNSServer(t testing.TB, records map[string][]netip.Addr) netip.AddrPort {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); ServeDNS(c, records) }()
	t.Cleanup(func() { c.Close(); <-done })
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// ServeDNS answers DNS queries on pc from records, as DNSServer does, until pc is closed (the
// caller owns pc and the goroutine that runs this).
func ServeDNS(pc net.PacketConn, records map[string][]netip.Addr) {
	zone := make(map[string][]netip.Addr, len(records))
	for name, addrs := range records {
		zone[fqdn(name)] = addrs
	}
	buf := make([]byte, 1500)
	out := make([]byte, 0, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp, ok := dnsAnswer(out[:0], buf[:n], zone); ok {
			_, _ = pc.WriteTo(resp, from)
		}
	}
}

func fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// dnsAnswer builds the response to query into out; false if query is no query it answers.
func dnsAnswer(out, query []byte, zone map[string][]netip.Addr) ([]byte, bool) {
	var p dnsmessage.Parser
	h, err := p.Start(query)
	if err != nil || h.Response {
		return nil, false
	}
	q, err := p.Question()
	if err != nil {
		return nil, false
	}
	addrs, known := zone[strings.ToLower(q.Name.String())]
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired,
		RecursionAvailable: true, RCode: dnsmessage.RCodeSuccess}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(out, rh)
	b.EnableCompression()
	if b.StartQuestions() != nil || b.Question(q) != nil || b.StartAnswers() != nil {
		return nil, false
	}
	ah := dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}
	for _, a := range addrs {
		switch {
		case q.Type == dnsmessage.TypeA && a.Is4():
			ah.Type = dnsmessage.TypeA
			err = b.AResource(ah, dnsmessage.AResource{A: a.As4()})
		case q.Type == dnsmessage.TypeAAAA && a.Is6() && !a.Is4In6():
			ah.Type = dnsmessage.TypeAAAA
			err = b.AAAAResource(ah, dnsmessage.AAAAResource{AAAA: a.As16()})
		}
		if err != nil {
			return nil, false
		}
	}
	resp, err := b.Finish()
	return resp, err == nil
}

// DNSQuery is a DNS query (recursion desired) for name (with or without the final dot) of type
// typ, with id. It panics on a name that is no DNS name.
func DNSQuery(id uint16, name string, typ dnsmessage.Type) []byte {
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	must := func(err error) {
		if err != nil {
			panic(fmt.Sprintf("testutil.DNSQuery(%q): %v", name, err))
		}
	}
	must(b.StartQuestions())
	n, err := dnsmessage.NewName(fqdn(name))
	must(err)
	must(b.Question(dnsmessage.Question{Name: n, Type: typ, Class: dnsmessage.ClassINET}))
	msg, err := b.Finish()
	must(err)
	return msg
}

// ParseDNSAnswer parses a DNS response: its id, the addresses of its A and AAAA answers in order
// (other answer types are skipped) and its response code. A message that is no response is an
// error.
func ParseDNSAnswer(b []byte) (id uint16, addrs []netip.Addr, rcode dnsmessage.RCode, err error) {
	var p dnsmessage.Parser
	h, err := p.Start(b)
	if err != nil {
		return 0, nil, 0, err
	}
	if !h.Response {
		return h.ID, nil, h.RCode, errors.New("dns: not a response")
	}
	if err := p.SkipAllQuestions(); err != nil {
		return h.ID, nil, h.RCode, err
	}
	for {
		ah, err := p.AnswerHeader()
		if errors.Is(err, dnsmessage.ErrSectionDone) {
			return h.ID, addrs, h.RCode, nil
		}
		if err != nil {
			return h.ID, addrs, h.RCode, err
		}
		switch ah.Type {
		case dnsmessage.TypeA:
			r, err := p.AResource()
			if err != nil {
				return h.ID, addrs, h.RCode, err
			}
			addrs = append(addrs, netip.AddrFrom4(r.A))
		case dnsmessage.TypeAAAA:
			r, err := p.AAAAResource()
			if err != nil {
				return h.ID, addrs, h.RCode, err
			}
			addrs = append(addrs, netip.AddrFrom16(r.AAAA))
		default:
			if err := p.SkipAnswer(); err != nil {
				return h.ID, addrs, h.RCode, err
			}
		}
	}
}
