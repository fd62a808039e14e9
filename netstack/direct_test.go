package netstack

import (
	"context"
	"errors"
	"io"
	"net/netip"
	"sync"
	"testing"

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
}
