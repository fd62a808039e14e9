package netstack

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// directExit is the exit half of TestDialerDirectFlows: its stack's flows and its connect service,
// each reporting what reached it. Flows to refuse are reset; the service answers a refusal query
// with refusalCode, or, for silentFor, closes without a word (an exit without the command).
type directExit struct {
	flows       chan netip.AddrPort
	requests    chan ConnectRequest
	refusedFrom chan uint16 // the source port of each flow reset
}

const refusalCode = messages.ReplyNotAllowed

var (
	refuseFlow = netip.MustParseAddr("192.0.2.11")
	silentFor  = netip.MustParseAddr("192.0.2.12")
)

func startDirectExit(t *testing.T) (*directExit, Dialer) {
	t.Helper()
	h := newChanHandler()
	client, exit := newPair(t, Config{}, Config{Handler: h})
	x := &directExit{flows: make(chan netip.AddrPort, 1), requests: make(chan ConnectRequest, 1), refusedFrom: make(chan uint16, 2)}
	svc := netip.AddrPortFrom(exitAddr, DefaultConnPort)
	ln, err := exit.stack.ListenTCP(svc)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	done := make(chan struct{}, 2)
	t.Cleanup(func() {
		close(stop)
		ln.Close()
		for range 2 {
			<-done
		}
	})
	go func() { // the exit's flows: refused, or accepted and closed
		defer func() { done <- struct{}{} }()
		for {
			select {
			case f := <-h.tcp:
				if a := f.Dst.Addr(); a == refuseFlow || a == silentFor {
					x.refusedFrom <- f.Src.Port()
					f.Reject()
					continue
				}
				if c, err := f.Accept(); err == nil {
					c.Close()
				}
				select {
				case x.flows <- f.Dst:
				case <-stop:
					return
				}
			case <-stop:
				return
			}
		}
	}()
	go func() { // the connect service
		defer func() { done <- struct{}{} }()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := ReadConnectRequest(c)
			switch {
			case err != nil:
				t.Errorf("connect service: %v", err)
			case req.Cmd == ConnectCmdRefusal && req.Host == silentFor.String():
			case req.Cmd == ConnectCmdRefusal:
				_ = WriteConnectReply(c, refusalCode)
			default:
				_ = WriteConnectReply(c, messages.ReplySucceeded)
			}
			c.Close()
			select {
			case x.requests <- req:
			case <-stop:
				return
			}
		}
	}()
	return x, Dialer{Stack: client.stack, Service: svc, Exit: []netip.Addr{exitAddr, exitAddr6}, Direct: true}
}

// TestDialerDirectFlows: destinations given as addresses go as direct flows (127.0.0.1 and ::1 to
// the exit's own addresses), names and what only the exit can judge through its connect service,
// and a reset flow's code is asked of the service.
func TestDialerDirectFlows(t *testing.T) {
	x, d := startDirectExit(t)
	ap := netip.MustParseAddrPort
	for _, tc := range []struct {
		host string
		port uint16
		flow netip.AddrPort // where the flow went; invalid: through the service
	}{
		{"192.0.2.10", 443, ap("192.0.2.10:443")},
		{"2001:db8::10", 443, ap("[2001:db8::10]:443")},
		{"::ffff:192.0.2.10", 80, ap("192.0.2.10:80")},
		{"127.0.0.1", 8080, netip.AddrPortFrom(exitAddr, 8080)},
		{"::1", 8080, netip.AddrPortFrom(exitAddr6, 8080)},
		{exitAddr.String(), 22, netip.AddrPortFrom(exitAddr, 22)},
		{"example.com", 80, netip.AddrPort{}},
		{"127.0.0.2", 80, netip.AddrPort{}},
		{"127.0.0.1", DefaultConnPort, netip.AddrPort{}}, // the service's port on the exit's address
		{exitAddr.String(), DefaultConnPort, netip.AddrPort{}},
		{clientAddr.String(), 80, netip.AddrPort{}},
		{"0.0.0.0", 80, netip.AddrPort{}},
		{"224.0.0.1", 80, netip.AddrPort{}},
		{"255.255.255.255", 80, netip.AddrPort{}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		c, err := d.DialTCP(ctx, tc.host, tc.port)
		cancel()
		if err != nil {
			t.Fatalf("%s port %d: %v", tc.host, tc.port, err)
		}
		c.Close()
		if tc.flow.IsValid() {
			if got, ok := testutil.Recv(x.flows, testTimeout); !ok || got != tc.flow {
				t.Errorf("%s port %d: flow to %v, want %v", tc.host, tc.port, got, tc.flow)
			}
		} else if req, ok := testutil.Recv(x.requests, testTimeout); !ok || req != (ConnectRequest{Cmd: ConnectCmdTCP, Host: tc.host, Port: tc.port}) {
			t.Errorf("%s port %d: service got %+v, want a TCP request for it", tc.host, tc.port, req)
		}
		select {
		case f := <-x.flows:
			t.Errorf("%s port %d: also a flow to %v", tc.host, tc.port, f)
		case r := <-x.requests:
			t.Errorf("%s port %d: also a service request %+v", tc.host, tc.port, r)
		default:
		}
	}

	// Without Direct every destination goes through the service.
	nd := d
	nd.Direct = false
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	c, err := nd.DialTCP(ctx, "192.0.2.10", 443)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if req, ok := testutil.Recv(x.requests, testTimeout); !ok || req.Cmd != ConnectCmdTCP || req.Host != "192.0.2.10" {
		t.Errorf("without Direct: service got %+v", req)
	}

	// A refused flow: the exit's code, asked of the service; an exit that closes the query
	// unanswered leaves the client with general failure.
	for _, tc := range []struct {
		dst  netip.Addr
		want messages.ReplyCode
	}{{refuseFlow, refusalCode}, {silentFor, messages.ReplyGeneralFailure}} {
		_, err := d.DialTCP(ctx, tc.dst.String(), 80)
		var de *DialError
		if !errors.As(err, &de) || de.Code != tc.want {
			t.Errorf("refused flow to %v: %v, want a DialError with code %v", tc.dst, err, tc.want)
		}
		want := ConnectRequest{Cmd: ConnectCmdRefusal, Host: tc.dst.String(), Port: 80, From: <-x.refusedFrom}
		if req, ok := testutil.Recv(x.requests, testTimeout); !ok || req != want || want.From == 0 {
			t.Errorf("refused flow to %v: service got %+v, want %+v", tc.dst, req, want)
		}
	}
}

// TestRefusalQueryParse: a refusal query names an address, a port and the flow's source port,
// and reads back as written, to its last byte.
func TestRefusalQueryParse(t *testing.T) {
	for _, tc := range []struct {
		host string
		port uint16
		from uint16
		ok   bool
	}{
		{"192.0.2.1", 80, 40000, true}, {"2001:db8::1", 443, 1, true}, {"example.com", 80, 40000, false},
		{"192.0.2.1", 0, 40000, false}, {"192.0.2.1", 80, 0, false}, {"", 80, 40000, false},
	} {
		w := &bytes.Buffer{}
		sent := ConnectRequest{Cmd: ConnectCmdRefusal, Host: tc.host, Port: tc.port, From: tc.from}
		if err := writeConnectRequest(w, sent); err != nil {
			t.Fatal(err)
		}
		got, err := ReadConnectRequest(w)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrBadConnectRequest)) || (tc.ok && got != sent) || w.Len() != 0 {
			t.Errorf("refusal query %+v: read %+v, %v, %d bytes left; want ok=%v", sent, got, err, w.Len(), tc.ok)
		}
	}
}
