package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// TestReloadPoolWireGuardDir: a pool of WireGuard exits only (exits.nats: false, on a bus whose
// exits it ignores) takes the files of its wireguard_dir; a reload with the same file reads the
// directory again: a file added there is an exit, and the slot that had none is placed on it.
func TestReloadPoolWireGuardDir(t *testing.T) {
	env := newReloadEnv(t)
	wgDir := t.TempDir()
	var servers []*testutil.WGServer
	for range 2 {
		servers = append(servers, testutil.StartWGServer(t, testutil.WGServerConfig{Forward: map[uint16]string{8080: env.echo}}))
	}
	servers[0].WriteClientConfigIn(t, wgDir, "a")
	ports := testutil.FreePortRange(t, 2)
	env.write(t, fmt.Sprintf("pool: {name: wgr, size: 2, socks_ports: %q, exits: {nats: false, wireguard_dir: %q}, "+
		"tunnel: {udp_bind: 127.0.0.1, drain_timeout: 1s}}\n", ports, wgDir))
	env.start(t)
	pr, err := pool.ParsePortRange(ports)
	if err != nil {
		t.Fatal(err)
	}
	slotsOn := func(want ...string) {
		t.Helper()
		testutil.Eventually(t, 20*time.Second, fmt.Sprintf("slots up on %v", want), func() bool {
			p := env.node.pool.Load()
			if p == nil {
				return false
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			slots, err := p.Slots(ctx)
			if err != nil || len(slots) != 2 {
				return false
			}
			var got []string
			for _, s := range slots {
				if s.State == messages.SlotUp {
					got = append(got, s.Exit)
				}
			}
			slices.Sort(got)
			return slices.Equal(got, want)
		})
	}
	slotsOn("wg:a") // one key, one slot: the other waits
	servers[1].WriteClientConfigIn(t, wgDir, "b")
	res, err := env.reload(t)
	if err != nil || !slices.Equal(res.Pool, []string{"pool.exits"}) || len(res.Errors) != 0 {
		t.Fatalf("reload with a file added: pool %v (%+v), %v; want [pool.exits]", res.Pool, res, err)
	}
	slotsOn("wg:a", "wg:b")
	target := netip.AddrPortFrom(servers[0].Address(), 8080).String()
	for i := range 2 {
		if err := echoVia(pr.AddrOf(i), target); err != nil {
			t.Errorf("slot %d: %v", i, err)
		}
	}
	if rx0, rx1 := servers[0].Received(), servers[1].Received(); rx0 == 0 || rx1 == 0 {
		t.Errorf("the servers received %d and %d bytes, want some each", rx0, rx1)
	}
}
