package test

// What a tunnel on a WireGuard exit refuses, with the exact SOCKS5 reply codes, and the errors
// for a WireGuard exit nobody configured.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// TestWireGuardExitRefusals: a tunnel on wg:one (the server's DNS answers origin.test with the
// server's address and outside.test with an address the server does not take) and one on
// wg:nodns (a file without DNS).
//
//   - A destination outside the peer's AllowedIPs (the server's address alone), by address or by
//     a name resolving there: SOCKS5 0x03 (network unreachable), HTTP proxy 502.
//   - A name through a tunnel whose file names no DNS server: 0x04 (host unreachable), HTTP 502;
//     the server's address as a literal still works there.
//   - SOCKS5 UDP ASSOCIATE: 0x07 (command not supported).
//   - Switch to "wg:nope": an error wrapping actors.ErrUnknownExit; the tunnel stays Up on its exit,
//     in the same session, without a transition, and carries traffic.
//   - OpenTunnel with "wg:nope" as its exit or a failover exit: a config error naming the field.
//
// Every refused connection is counted by the tunnel as dial_failed.
func TestWireGuardExitRefusals(t *testing.T) {
	origin := startServer(t, echoHandler)
	srv := startWGServerFor(t, origin.Addr(), testutil.WGServerConfig{DNS: map[string][]netip.Addr{
		wgName: {netip.MustParseAddr("10.99.0.1")}, "outside.test": {netip.MustParseAddr("10.1.2.3")}}})
	noDNS := testutil.StartWGServer(t, testutil.WGServerConfig{Forward: map[uint16]string{wgOrigin: origin.Addr()}})
	if strings.Contains(noDNS.ClientConfig(), "DNS") {
		t.Fatalf("the second server's client file names a DNS server:\n%s", noDNS.ClientConfig())
	}
	client := wgClient(t, wgSpec(t, "one", srv), wgSpec(t, "nodns", noDNS))
	ev := watchTunnel(client)
	tun := openTunnel(t, client, "wg:one")
	ev.id = tun.ID()
	ev.await(t, 5*time.Second, messages.StateUp, gone...)
	bare := openTunnel(t, client, "wg:nodns")
	proxied := func(tun *engine.Tunnel, target string) int {
		t.Helper()
		resp, err := httpProxyClient(t, tun).Get("http://" + target + "/")
		if err != nil {
			t.Fatalf("HTTP proxy GET %s: %v", target, err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	t.Run("outside AllowedIPs", func(t *testing.T) {
		wantSocksReply(t, tun.SOCKSAddr(), socksCmdConnect, "10.1.2.3", 80, socksNetUnreachable)
		wantSocksReply(t, tun.SOCKSAddr(), socksCmdConnect, "fd00::1", 80, socksNetUnreachable)
		wantSocksReply(t, tun.SOCKSAddr(), socksCmdConnect, "outside.test", 80, socksNetUnreachable)
		if code := proxied(tun, "10.1.2.3:80"); code != http.StatusBadGateway {
			t.Errorf("HTTP proxy to an address outside AllowedIPs: %d, want 502", code)
		}
	})
	t.Run("no DNS configured", func(t *testing.T) {
		wantSocksReply(t, bare.SOCKSAddr(), socksCmdConnect, wgName, wgOrigin, socksHostUnreachable)
		if code := proxied(bare, fmt.Sprintf("%s:%d", wgName, wgOrigin)); code != http.StatusBadGateway {
			t.Errorf("HTTP proxy to a name without DNS: %d, want 502", code)
		}
		c := mustSocks(t, bare.SOCKSAddr(), fmt.Sprintf("10.99.0.1:%d", wgOrigin))
		defer c.Close()
		if err := roundTrip(c, "by address without DNS"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("UDP ASSOCIATE", func(t *testing.T) {
		wantSocksReply(t, tun.SOCKSAddr(), socksCmdUDPAssociate, "0.0.0.0", 0, socksCmdNotSupported)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := testutil.DialSOCKS5UDP(ctx, tun.SOCKSAddr(), "", "")
		var rep testutil.SOCKS5ReplyError
		if !errors.As(err, &rep) || rep.Code != socksCmdNotSupported {
			if c != nil {
				c.Close()
			}
			t.Errorf("DialSOCKS5UDP: %v, want reply %#02x", err, socksCmdNotSupported)
		}
	})
	t.Run("Switch to an unknown WireGuard exit", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		before, err := tun.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		err = tun.Switch(ctx, "wg:nope")
		if !errors.Is(err, actors.ErrUnknownExit) || !strings.Contains(err.Error(), "wg:nope") {
			t.Fatalf("Switch to wg:nope: %v, want ErrUnknownExit naming it", err)
		}
		after, err := tun.Info(ctx)
		if err != nil || after.State != messages.StateUp || after.ExitID != "wg:one" || after.SessionID != before.SessionID {
			t.Errorf("after the refused Switch: %+v, %v; want Up on wg:one in session %s", after, err, before.SessionID)
		}
		ev.none(t, messages.StateSwitching, messages.StateReconnecting, messages.StateDegraded, messages.StateClosing, messages.StateFailed)
		c := mustSocks(t, tun.SOCKSAddr(), fmt.Sprintf("10.99.0.1:%d", wgOrigin))
		defer c.Close()
		if err := roundTrip(c, "after the refused switch"); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("OpenTunnel with an unknown WireGuard exit", func(t *testing.T) {
		for field, spec := range map[string]engine.TunnelSpec{
			"tunnel.exit":     {Exit: "wg:nope"},
			"tunnel.exits[1]": {Exit: "wg:one", Exits: []string{"wg:nodns", "wg:nope"}},
		} {
			spec.SOCKS = "127.0.0.1:0"
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			tun, err := client.OpenTunnel(ctx, spec)
			cancel()
			if err == nil {
				_ = tun.Close(context.Background())
				t.Fatalf("OpenTunnel %+v succeeded", spec)
			}
			var fe *engine.FieldError
			if !errors.As(err, &fe) || fe.Field != field || !errors.Is(err, actors.ErrUnknownExit) || !errors.Is(err, engine.ErrInvalidConfig) ||
				!strings.Contains(err.Error(), field) || !strings.Contains(err.Error(), "wg:nope") {
				t.Errorf("OpenTunnel with wg:nope as %s: %v; want a field error on %s wrapping ErrUnknownExit, naming wg:nope", field, err, field)
			}
		}
	})

	// Counted, by reason: on wg:one three SOCKS5 CONNECTs and an HTTP request outside AllowedIPs
	// and the two UDP ASSOCIATEs refused (dial_failed), one connection that worked; on wg:nodns a
	// SOCKS5 CONNECT and an HTTP request by name refused, one connection by address that worked.
	for _, c := range []struct {
		tun            *engine.Tunnel
		refused, oneOK uint64
	}{{tun, 6, 1}, {bare, 2, 1}} {
		n := c.refused + c.oneOK
		st := poll(t, "the tunnel's connections to end", c.tun.Stats, func(s messages.ConnectionStats) bool { return s.Ended >= n && s.Active == 0 })
		wantEnds(t, c.tun.ID(), st, n, ec{rDialFailed: c.refused, rNormal: c.oneOK}, ec{rDialFailed: c.refused, rNormal: c.oneOK})
	}
}
