package netstack

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// TestDirectDialer: through a WireGuard pair whose far side is a plain stack (no connect service),
// an IP literal and a name (resolved by a DNS server inside the tunnel) both reach a listener there,
// and every refusal is a DialError with the code a proxy client gets.
func TestDirectDialer(t *testing.T) {
	client, server := newPair(t, Config{}, Config{})
	var wg sync.WaitGroup // the servers' goroutines, ended by closing their sockets
	defer wg.Wait()
	for _, a := range []netip.Addr{exitAddr, exitAddr6} {
		ln, err := server.stack.ListenTCP(netip.AddrPortFrom(a, 8080))
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() { defer wg.Done(); defer c.Close(); _, _ = io.Copy(c, c) }()
			}
		}()
	}
	dns, err := server.stack.ListenUDP(netip.AddrPortFrom(exitAddr, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		testutil.ServeDNS(dns, map[string][]netip.Addr{"origin.test": {exitAddr, exitAddr6}, "v6only.test": {exitAddr6}})
	}()

	d := DirectDialer{Stack: client.stack, DNS: []netip.Addr{exitAddr}}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, host := range []string{exitAddr.String(), "origin.test", "v6only.test"} {
		c, err := d.DialTCP(ctx, host, 8080)
		if err != nil {
			t.Fatalf("dial %s: %v", host, err)
		}
		msg := testutil.PayloadBytes(7, 4096) // fits the socket buffers: written before it is read back
		if _, err := c.Write(msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != string(msg) {
			t.Fatalf("echo through %s: %v", host, err)
		}
		c.Close()
	}
	for _, tc := range []struct {
		name string
		d    DirectDialer
		host string
		port uint16
		code messages.ReplyCode
	}{
		{"unknown name", d, "nowhere.test", 8080, messages.ReplyHostUnreachable},
		{"no resolver", DirectDialer{Stack: client.stack}, "origin.test", 8080, messages.ReplyHostUnreachable},
		{"refused port", d, exitAddr.String(), 8081, messages.ReplyConnectionRefused},
		{"outside AllowedIPs", DirectDialer{Stack: client.stack, Allowed: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
			exitAddr6.String(), 8080, messages.ReplyNetworkUnreachable},
	} {
		c, err := tc.d.DialTCP(ctx, tc.host, tc.port)
		if err == nil {
			c.Close()
			t.Fatalf("%s: dialled", tc.name)
		}
		var de *DialError
		if !errors.As(err, &de) || de.Code != tc.code {
			t.Fatalf("%s: %v, want reply %d", tc.name, err, tc.code)
		}
	}
	var de *DialError
	if _, err := (DirectDialer{Stack: client.stack}).DialTCP(ctx, "origin.test", 80); !errors.As(err, &de) || !errors.Is(err, ErrNoResolver) {
		t.Fatalf("no resolver: %v, want ErrNoResolver", err)
	}
	if _, err := d.AssociateUDP(ctx); !errors.As(err, &de) || de.Code != messages.ReplyCommandNotSupported || !errors.Is(err, ErrNoUDPAssociate) {
		t.Fatalf("UDP association through a WireGuard exit: %v, want 0x07", err)
	}
	inside := DirectDialer{Stack: client.stack, Allowed: []netip.Prefix{netip.PrefixFrom(exitAddr, 32)}}
	c, err := inside.DialTCP(ctx, exitAddr.String(), 8080)
	if err != nil {
		t.Fatalf("dial inside AllowedIPs: %v", err)
	}
	c.Close()
}

// TestHandshakeEvents: AwaitHandshake returns once a handshake completes after the time given
// (not for an older one), InitiateHandshakes starts one at once even within RekeyTimeout of the
// last, and a context that ends first is returned.
func TestHandshakeEvents(t *testing.T) {
	client, _ := newPair(t, Config{}, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	before := time.Now()
	client.dev.InitiateHandshakes(ctx, 0)
	if err := client.dev.AwaitHandshake(ctx, before); err != nil {
		t.Fatalf("first handshake: %v", err)
	}
	first := client.dev.LastHandshake()
	if !first.After(before) {
		t.Fatalf("last handshake %v, want after %v", first, before)
	}
	// A handshake older than the time asked does not count: nothing new comes without an
	// initiation, so the wait ends with its context.
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	err := client.dev.AwaitHandshake(short, first)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("await with no new handshake: %v, want deadline exceeded", err)
	}
	// Well within RekeyTimeout (5 s) of the last initiation: forced anyway.
	second := time.Now()
	client.dev.InitiateHandshakes(ctx, 0)
	if err := client.dev.AwaitHandshake(ctx, second); err != nil {
		t.Fatalf("forced handshake: %v", err)
	}
	if time.Since(second) > 2*time.Second {
		t.Fatalf("forced handshake took %v", time.Since(second))
	}
}

// TestDirectDialerResendsDNS: a DNS query whose datagram is lost is asked again after dnsResend,
// not given up for the next record type after dnsTry (the first A query here is dropped).
func TestDirectDialerResendsDNS(t *testing.T) {
	client, server := newPair(t, Config{}, Config{})
	dns, err := server.stack.ListenUDP(netip.AddrPortFrom(exitAddr, 53))
	if err != nil {
		t.Fatal(err)
	}
	defer dns.Close()
	done := make(chan struct{})
	defer func() { <-done }()
	defer dns.Close()
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		if _, _, err := dns.ReadFrom(buf); err != nil { // the first query: lost
			return
		}
		testutil.ServeDNS(dns, map[string][]netip.Addr{"origin.test": {exitAddr, exitAddr6}})
	}()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	start := time.Now()
	a, err := DirectDialer{Stack: client.stack, DNS: []netip.Addr{exitAddr}}.Resolve(ctx, "origin.test")
	if err != nil || a != exitAddr {
		t.Fatalf("resolve after a lost query: %v, %v; want %v (the A record)", a, err, exitAddr)
	}
	if took := time.Since(start); took > dnsTry-dnsResend {
		t.Fatalf("resolve after a lost query took %v: the query was not asked again", took)
	}
}
