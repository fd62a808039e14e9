package engine

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

// exitAndClient starts an exit engine ("x", its embedded NATS server listening on loopback) and a
// client engine on that server; both close at the test's end.
func exitAndClient(t *testing.T, exitID string, client func(*Config)) (x, c *Engine) {
	t.Helper()
	x = startTestEngine(t, Config{Exit: &ExitConfig{ID: exitID, Listen: "127.0.0.1:0", Egress: EgressConfig{AllowLoopback: true}, Open: true},
		NATS: NATSConfig{EmbeddedListen: "127.0.0.1:0"}})
	cfg := Config{NATS: NATSConfig{URLs: []string{x.NATSURL()}}, Trust: TrustConfig{AnyExit: true}}
	if client != nil {
		client(&cfg)
	}
	return x, startTestEngine(t, cfg)
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func names(ts []*Tunnel) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID()
	}
	return out
}

// TestTunnelNames: the engine's own tunnels have unique names; Tunnels lists them sorted with
// their addresses, Tunnel finds one by name; a name is free again as soon as Close has returned.
// TunnelInfo carries when the tunnel opened, its last handshake, its last cause and its exits.
func TestTunnelNames(t *testing.T) {
	_, c := exitAndClient(t, "names-x", nil)
	ctx := testCtx(t)
	open := func(name string) (*Tunnel, error) {
		return c.OpenTunnel(ctx, TunnelSpec{Name: name, Exit: "names-x", Exits: []string{"names-y"}, SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1"})
	}
	before := time.Now()
	b, err := open("b")
	if err != nil {
		t.Fatal(err)
	}
	a, err := open("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := open("a"); !errors.Is(err, ErrTunnelExists) || !strings.Contains(err.Error(), "a") {
		t.Fatalf("second open of a: %v; want ErrTunnelExists naming it", err)
	}
	list, err := c.Tunnels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := names(list); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("Tunnels: %v; want [a b]", got)
	}
	if list[0].SOCKSAddr() != a.SOCKSAddr() || list[1].SOCKSAddr() != b.SOCKSAddr() {
		t.Fatalf("listed addresses %s %s; opened %s %s", list[0].SOCKSAddr(), list[1].SOCKSAddr(), a.SOCKSAddr(), b.SOCKSAddr())
	}
	found, err := c.Tunnel(ctx, "b")
	if err != nil || found.ID() != "b" || found.SOCKSAddr() != b.SOCKSAddr() {
		t.Fatalf("Tunnel(b): %v, %v", found, err)
	}
	if _, err := c.Tunnel(ctx, "nope"); !errors.Is(err, ErrTunnelNotFound) {
		t.Fatalf("Tunnel(nope): %v; want ErrTunnelNotFound", err)
	}

	info, err := a.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case info.OpenedAt.Before(before) || info.UpSince.Before(info.OpenedAt):
		t.Errorf("opened at %v, up since %v (test began %v)", info.OpenedAt, info.UpSince, before)
	case info.LastHandshake.Before(info.OpenedAt) || info.LastHandshake.After(time.Now()):
		t.Errorf("last handshake %v; opened at %v", info.LastHandshake, info.OpenedAt)
	case !strings.HasPrefix(info.Cause, "handshake completed with names-x"):
		t.Errorf("cause %q", info.Cause)
	case !slices.Equal(info.Exits, []string{"names-x", "names-y"}):
		t.Errorf("exits %v", info.Exits)
	}

	if err := a.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Tunnel(ctx, "a"); !errors.Is(err, ErrTunnelNotFound) {
		t.Fatalf("Tunnel(a) once closed: %v; want ErrTunnelNotFound", err)
	}
	a2, err := open("a") // at once: the name is free once Close has returned
	if err != nil {
		t.Fatalf("open a again: %v", err)
	}
	list, err = c.Tunnels(ctx)
	if err != nil || !slices.Equal(names(list), []string{"a", "b"}) || list[0].SOCKSAddr() != a2.SOCKSAddr() {
		t.Fatalf("Tunnels after reopening a: %v, %v", names(list), err)
	}
	if info, err := a2.Info(ctx); err != nil || info.State != messages.StateUp {
		t.Fatalf("a again: %v, %v", info.State, err)
	}
}
