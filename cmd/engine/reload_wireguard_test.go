package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// wgTunnelOn waits until tunnel name is Up on exit, and proves it with an echo through its proxy
// to target (a port a WireGuard server forwards to the echo server).
func (env *reloadEnv) wgTunnelOn(t *testing.T, name, exit, target string) engine.TunnelInfo {
	t.Helper()
	info := testutil.Poll(t, 15*time.Second, name+" up on "+exit, func(ctx context.Context) (engine.TunnelInfo, error) {
		tun, err := env.node.eng.Tunnel(ctx, name)
		if err != nil {
			return engine.TunnelInfo{}, err
		}
		return tun.Info(ctx)
	}, func(i engine.TunnelInfo) bool { return i.State == messages.StateUp && i.ExitID == exit })
	if err := echoVia(info.SOCKSAddr, target); err != nil {
		t.Fatalf("%s on %s: echo to %s: %v", name, exit, target, err)
	}
	return info
}

// TestReloadWireGuardExits: a reload applies wireguard_exits before the tunnels. Two plain
// WireGuard servers forward port 7 of their own addresses (10.99.0.1 and 10.98.0.1) to the echo
// server; each client configuration allows only its server's address, so an echo to an address
// proves which server carries the tunnel. Tunnel a starts on wg:one (a wg-quick file). Reloads:
//
//  1. wg:two added (inline) and a's exit changed to it: a is updated (it learns wg:two) and
//     switched; it carries to 10.98.0.1 and no longer to 10.99.0.1.
//  2. wg:one removed, wg:two's check changed to a port the server refuses; a's spec unchanged: a is
//     updated in place and keeps its session (it still carries); a Switch to wg:one is refused
//     (unknown exit); a Reconfigure starts a leg with the new check, which fails: a waits.
//  3. wg:two's check fixed: the waiting tunnel takes the fixed configuration and comes up.
//  4. wg:one added back, a stays on wg:two: updated (it learns wg:one).
//  5. a moved to wg:one, the WireGuard exits unchanged: a plain switch.
//  6. wg:one removed and a moved to wg:two in the same reload: updated and switched.
//  7. a bad public key: the reload is refused naming the field, nothing changes, and the error
//     does not show the private key.
//
// No step reports a section as needing a restart.
func TestReloadWireGuardExits(t *testing.T) {
	env := newReloadEnv(t)
	one := testutil.StartWGServer(t, testutil.WGServerConfig{Address: netip.MustParseAddr("10.99.0.1"), Forward: map[uint16]string{7: env.echo}})
	two := testutil.StartWGServer(t, testutil.WGServerConfig{Address: netip.MustParseAddr("10.98.0.1"), Forward: map[uint16]string{7: env.echo}})
	viaOne, viaTwo := "10.99.0.1:7", "10.98.0.1:7"
	oneFile := one.WriteClientConfig(t)
	b64 := func(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }
	sa := freeAddr(t)
	// write writes the config: wg:one (if withOne), wg:two with the given check port and public
	// key, and tunnel a on exit. Keepalive is off: with it, the leg's first handshake waits 5 s
	// for WireGuard's retry (the device's first keepalive and the probe's forced handshake go out
	// together; the server drops the second).
	write := func(withOne bool, checkPort int, twoPub, exit string) {
		var b strings.Builder
		b.WriteString("wireguard_exits:\n")
		if withOne {
			fmt.Fprintf(&b, "  - {name: one, file: %q}\n", oneFile)
		}
		fmt.Fprintf(&b, "  - name: two\n    interface: {private_key: %q, address: [%s/32]}\n", b64(two.ClientKey()), two.Peer())
		fmt.Fprintf(&b, "    peer: {public_key: %q, endpoint: %q, allowed_ips: [%s/32]}\n", twoPub, two.Endpoint(), two.Address())
		fmt.Fprintf(&b, "    check: {tcp: \"%s:%d\"}\n", two.Address(), checkPort)
		fmt.Fprintf(&b, "tunnels:\n  - {name: a, exit: %q, socks: %q, keepalive: -1, handshake_timeout: 2s, "+
			"health: {backoff_min: 50ms, backoff_max: 200ms}}\n", exit, sa)
		env.write(t, b.String())
	}
	reload := func(step string, wantWG, wantUpdated, wantSwitched []string) {
		t.Helper()
		res, err := env.reload(t)
		if err != nil || !slices.Equal(res.WireGuard, wantWG) || !slices.Equal(res.Updated, wantUpdated) ||
			!slices.Equal(res.Switched, wantSwitched) || len(res.Errors)+len(res.Replaced)+len(res.Opened)+len(res.Closed)+len(res.NeedsRestart) != 0 {
			t.Fatalf("%s: %+v, %v\nwant wireguard_exits %v, updated %v, switched %v, nothing else", step, res, err, wantWG, wantUpdated, wantSwitched)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tunnelA := func() *engine.Tunnel {
		tun, err := env.node.eng.Tunnel(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		return tun
	}
	twoPub := b64(two.PublicKey())

	// wg:one only at first: the start-up config has no wg:two.
	env.write(t, fmt.Sprintf("wireguard_exits: [{name: one, file: %q}]\ntunnels: [{name: a, exit: \"wg:one\", socks: %q, keepalive: -1, "+
		"handshake_timeout: 2s, health: {backoff_min: 50ms, backoff_max: 200ms}}]\n", oneFile, sa))
	env.start(t)
	env.wgTunnelOn(t, "a", "wg:one", viaOne)

	// 1. wg:two added, a moved to it.
	write(true, 7, twoPub, "wg:two")
	reload("wg:two added", []string{"wg:two added"}, []string{"a"}, []string{"a"})
	info := env.wgTunnelOn(t, "a", "wg:two", viaTwo)
	if err := echoVia(sa, viaOne); err == nil {
		t.Fatalf("a on wg:two reached %s, wg:one's address", viaOne)
	}

	// 2. wg:one removed, wg:two's check changed: a keeps its session, learns the new set.
	write(false, 9, twoPub, "wg:two")
	reload("wg:one removed, wg:two changed", []string{"wg:one removed", "wg:two changed"}, []string{"a"}, nil)
	if i := env.wgTunnelOn(t, "a", "wg:two", viaTwo); i.SessionID != info.SessionID {
		t.Fatalf("a's session changed (%s, was %s): an update must not touch it", i.SessionID, info.SessionID)
	}
	if err := tunnelA().Switch(ctx, "wg:one"); !errors.Is(err, actors.ErrUnknownExit) {
		t.Fatalf("switch to the removed wg:one: %v, want ErrUnknownExit", err)
	}
	_ = tunnelA().Reconfigure(ctx) // a new leg, with the check on port 9: it cannot pass
	testutil.Poll(t, 10*time.Second, "a waiting on wg:two's failing check", func(ctx context.Context) (engine.TunnelInfo, error) {
		return tunnelA().Info(ctx)
	}, func(i engine.TunnelInfo) bool { return i.State == messages.StateReconnecting })

	// 3. The check fixed: the waiting tunnel comes up with the new configuration. (Its
	// reconnection tries wg:two, where it was switched to, and wg:one, its configured exit: wg:one
	// stays out for now.)
	write(false, 7, twoPub, "wg:two")
	reload("wg:two fixed", []string{"wg:two changed"}, []string{"a"}, nil)
	env.wgTunnelOn(t, "a", "wg:two", viaTwo)

	// 4. wg:one back; a stays on wg:two, but learns it.
	write(true, 7, twoPub, "wg:two")
	reload("wg:one added", []string{"wg:one added"}, []string{"a"}, nil)
	env.wgTunnelOn(t, "a", "wg:two", viaTwo)

	// 5. The WireGuard exits unchanged, a's exit changed: a plain switch, to the exit it learnt.
	write(true, 7, twoPub, "wg:one")
	reload("a to wg:one", nil, nil, []string{"a"})
	env.wgTunnelOn(t, "a", "wg:one", viaOne)

	// 6. wg:one removed while a leaves it.

	write(false, 7, twoPub, "wg:two")
	reload("wg:one removed, a to wg:two", []string{"wg:one removed"}, []string{"a"}, []string{"a"})
	info = env.wgTunnelOn(t, "a", "wg:two", viaTwo)

	// 7. An invalid WireGuard exit refuses the whole file.
	write(false, 7, twoPub[:43], "wg:two")
	_, err := env.reload(t)
	if fe := new(engine.FieldError); !errors.As(err, &fe) || fe.Field != "wireguard_exits[0].peer.public_key" {
		t.Fatalf("reload with a bad public key: %v, want a field error for wireguard_exits[0].peer.public_key", err)
	}
	if strings.Contains(err.Error(), b64(two.ClientKey())) {
		t.Fatalf("the error shows the private key: %v", err)
	}
	if i := env.wgTunnelOn(t, "a", "wg:two", viaTwo); i.SessionID != info.SessionID {
		t.Fatal("a refused reload touched a")
	}
	if got := env.node.eng.WireGuardExits(); len(got) != 1 || got["wg:two"] == nil {
		t.Fatalf("a refused reload changed the WireGuard exits: %v", got)
	}
}
