package test

// StartTunnel: a tunnel that keeps trying until its exit is there.

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/messages"
)

// startSpec is a tunnel to exit on loopback proxies that retries quickly.
func startSpec(name, exit string, handshake time.Duration) engine.TunnelSpec {
	return engine.TunnelSpec{Name: name, Exit: exit, SOCKS: "127.0.0.1:0", HTTP: "127.0.0.1:0", UDPBind: "127.0.0.1",
		HandshakeTimeout: engine.Duration(handshake), Health: calmHealth()}
}

// TestStartTunnelWaitsForItsExit: StartTunnel to an exit nobody serves yet returns with its
// listeners bound; the tunnel goes to Reconnecting (class "start") instead of failing, and once
// the exit starts (another engine on the same NATS) it comes Up by itself and carries data.
func TestStartTunnelWaitsForItsExit(t *testing.T) {
	ns := startNATS(t, nil)
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun, err := client.StartTunnel(bounded(t), startSpec("late", "late-x", 2*time.Second))
	if err != nil {
		t.Fatalf("StartTunnel: %v", err)
	}
	if tun.SOCKSAddr() == "" || tun.HTTPAddr() == "" || strings.HasSuffix(tun.SOCKSAddr(), ":0") {
		t.Fatalf("StartTunnel returned without its listeners: socks %q http %q", tun.SOCKSAddr(), tun.HTTPAddr())
	}
	if _, err := client.StartTunnel(bounded(t), startSpec("late", "late-x", time.Second)); !errors.Is(err, engine.ErrTunnelExists) {
		t.Fatalf("StartTunnel with the same name: %v; want ErrTunnelExists", err)
	}
	rcn := ev.await(t, within, stRcn, stFail, stClg)
	if rcn.From != stNeg || !strings.HasPrefix(rcn.Cause, "first session failed") {
		t.Fatalf("into reconnecting from %s (%s); want from negotiating, first session failed", rcn.From, rcn.Cause)
	}
	if info, err := tun.Info(bounded(t)); err != nil || !info.UpSince.IsZero() || info.State == stUp {
		t.Fatalf("before its exit is there: %s, up since %v (%v)", info.State, info.UpSince, err)
	}
	if n := client.Counters().Reconnects[messages.ReconnectStart]; n == 0 {
		t.Fatalf("reconnects of class start: %d", n)
	}

	startExitEngine(t, "late-x", func(c *engine.Config) { c.NATS.URLs = []string{ns.URL()} })
	up := ev.await(t, within, stUp, stFail, stClg)
	if up.From != stRcn {
		t.Fatalf("up from %s (%s); want from reconnecting", up.From, up.Cause)
	}
	info, err := tun.Info(bounded(t))
	if err != nil || info.State != stUp || info.ExitID != "late-x" || info.UpSince.IsZero() || info.LastHandshake.IsZero() {
		t.Fatalf("once up: %+v (%v)", info, err)
	}
	srv := newPayloadServer()
	defer srv.Close()
	if err := download(socksClient(t, tun), srv.URL, 11, 2<<20); err != nil {
		t.Fatalf("download through the started tunnel: %v", err)
	}
	if err := download(httpProxyClient(t, tun), srv.URL, 12, 1<<20); err != nil {
		t.Fatalf("download through its HTTP proxy: %v", err)
	}
}
