package test

// Signaling faults: NATS goes away under a live tunnel, or the node it is connected to does.

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// TestSignalingOutageKeepsTunnelUp: NATS goes away during a transfer, three times on the same
// tunnel: each time the tunnel goes Degraded, never Reconnecting; NATS stays down until the
// transfer has completed intact, and once it is back signaling recovers by itself (Up).
func TestSignalingOutageKeepsTunnelUp(t *testing.T) {
	srv, started := slowServer(t)
	ns := startNATS(t, nil)
	startExitEngine(t, "sig", func(c *engine.Config) { c.NATS.URLs = []string{ns.URL()} })
	client := startEngine(t, natsClient(ns))
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "sig", Health: fastHealth()})
	ev.id = tun.ID()
	bad := append([]messages.TunnelState{messages.StateReconnecting}, gone...)
	for round := 1; round <= faultRounds; round++ {
		done := make(chan error, 1)
		go func() { done <- slowDownload(socksClient(t, tun), srv.URL, uint64(10+round), 2<<20, 2500) }()
		awaitStarted(t, started)
		stopped := time.Now()
		ns.Stop()
		deg := ev.await(t, 5*time.Second, messages.StateDegraded, bad...)
		// NATS stays down for the rest of the transfer (30 s in the issue, 2.5 s here).
		if err := testutil.Await(t, done, 30*time.Second, "the transfer across the signaling outage"); err != nil {
			t.Fatalf("round %d: transfer across the signaling outage: %v", round, err)
		}
		restarted := time.Now()
		ns.Restart()
		up := ev.await(t, 10*time.Second, messages.StateUp, bad...)
		info, err := tun.Info(context.Background())
		if err != nil || info.Reconnects != 0 || info.SOCKSAddr != tun.SOCKSAddr() {
			t.Fatalf("round %d: after the outage: %+v, %v", round, info, err)
		}
		t.Logf("round %d: NATS down → degraded %v; NATS back → up %v", round, ms(since(stopped, deg)), ms(since(restarted, up)))
	}
	ev.none(t, bad...)
}

// TestNATSClusterFailover: the NATS node the client is connected to shuts down mid-transfer, three
// times (the node comes back in between): the tunnel stays up, never reconnects, and signaling
// moves to another node of the cluster each time.
func TestNATSClusterFailover(t *testing.T) {
	srv, started := slowServer(t)
	cluster := func(routes string) func(*server.Options) {
		return func(o *server.Options) {
			o.Cluster.Name, o.Cluster.Host, o.Cluster.Port = "warren", "127.0.0.1", -1
			if routes != "" {
				o.Routes = server.RoutesFromStr(routes)
			}
		}
	}
	a := startNATS(t, cluster(""))
	seed := fmt.Sprintf("nats://127.0.0.1:%d", a.srv.ClusterAddr().Port)
	b := startNATS(t, cluster(seed))
	c := startNATS(t, cluster(seed))
	nodes := []*natsServer{a, b, c}
	formed := func() bool {
		for _, n := range nodes {
			if n.srv.NumRoutes() < 2 {
				return false
			}
		}
		return true
	}
	waitFor(t, 10*time.Second, "the cluster to form", formed)
	startExitEngine(t, "clustered", func(cfg *engine.Config) { cfg.NATS.URLs = []string{b.URL(), c.URL()} })
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{a.URL(), b.URL(), c.URL()}}})
	ev := watchTunnel(client)
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "clustered", Health: fastHealth()})
	ev.id = tun.ID()
	bad := append([]messages.TunnelState{messages.StateReconnecting}, gone...)
	for round := 1; round <= faultRounds; round++ {
		done := make(chan error, 1)
		go func() { done <- slowDownload(socksClient(t, tun), srv.URL, uint64(100+round), 1<<20, 1000) }()
		awaitStarted(t, started)
		// nats.go randomises the server list by default: shut down whichever node the client is on.
		on := client.NATSConnectedURL()
		var victim *natsServer
		for _, n := range nodes {
			if on != "" && mustHost(n.URL()) == mustHost(on) {
				victim = n
			}
		}
		if victim == nil {
			t.Fatalf("round %d: client connected to %q, none of the nodes", round, on)
		}
		stopped := time.Now()
		victim.Stop()
		if err := testutil.Await(t, done, 30*time.Second, "the transfer across the node's shutdown"); err != nil {
			t.Fatalf("round %d: transfer across the node's shutdown: %v", round, err)
		}
		waitFor(t, 10*time.Second, "the client to reconnect to another node", func() bool {
			now := client.NATSConnectedURL()
			return now != "" && mustHost(now) != mustHost(on)
		})
		moved := time.Since(stopped)
		// Signaling works through the new node: a reconfigure negotiates a new session.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if err := tun.Reconfigure(ctx); err != nil {
			cancel()
			t.Fatalf("round %d: reconfigure after the node went away: %v", round, err)
		}
		info, _ := tun.Info(ctx)
		cancel()
		if info.Reconnects != 0 || info.State != messages.StateUp {
			t.Fatalf("round %d: after failover: %+v", round, info)
		}
		ev.none(t, bad...)
		t.Logf("round %d: node %s down; client on %s after %v", round, mustHost(on), mustHost(client.NATSConnectedURL()), ms(moved))
		victim.Restart()
		waitFor(t, 15*time.Second, "the cluster to form again", formed)
	}
}

func mustHost(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host
}
