package test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// controlEnds waits for the proxy to close c's control connection and returns how long it took.
func controlEnds(t testing.TB, c *testutil.SOCKS5UDP, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.Control().SetReadDeadline(start.Add(within))
	if _, err := io.Copy(io.Discard, c.Control()); err != nil {
		t.Fatalf("the control connection did not end within %v: %v", within, err)
	}
	return time.Since(start)
}

// TestUDPSwitchAndDrain: an association on a tunnel that switches exits keeps working through the
// old exit while the old leg drains, then ends with drain_timeout; one opened after the switch goes
// through the new exit. A Close with a drain lets an association run until the drain ends.
func TestUDPSwitchAndDrain(t *testing.T) {
	a := startExitEngine(t, "exit-a", listenTCP)
	b := startExitEngine(t, "exit-b", func(c *engine.Config) { c.NATS.URLs = []string{a.NATSURL()} })
	tun := openTunnelSpec(t, a, engine.TunnelSpec{Exit: "exit-a"})
	echo := testutil.UDPEchoServer(t)

	old := associate(t, tun, "", "")
	echoSmall(t, old, echo, 1, 20)
	drain := 2 * time.Second
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tun.Switch(ctx, "exit-b", engine.WithDrainTimeout(drain)); err != nil {
		t.Fatalf("Switch: %v", err)
	}
	switched := time.Now()
	echoSmall(t, old, echo, 2, 20) // the old leg drains: its association still carries datagrams
	fresh := associate(t, tun, "", "")
	echoSmall(t, fresh, echo, 3, 20)
	if took := controlEnds(t, old, drain+10*time.Second); time.Since(switched) < drain*9/10 {
		t.Fatalf("the old association ended %v after the switch, before its drain of %v (waited %v)", time.Since(switched), drain, took)
	}
	st := pollTunnelUDP(t, tun, "the old association to be counted", func(s messages.ConnectionStats) bool { return s.UDP.Associations == 1 })
	if n := st.ByEnd[messages.SideIncoming][messages.EndDrainTimeout]; n != 1 {
		t.Fatalf("ended associations by reason %v, want one drain_timeout", st.ByEnd)
	}
	sa := exitUDP(t, a, 1)
	if sa.UDP.DatagramsIn != 40 || sa.UDP.DatagramsOut != 40 {
		t.Fatalf("exit-a moved %d/%d datagrams, want the old association's 40/40", sa.UDP.DatagramsIn, sa.UDP.DatagramsOut)
	}

	// Close with a drain: the new association runs on until the drain ends.
	closed := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		closed <- tun.Close(ctx, engine.WithDrainTimeout(drain))
	}()
	testutil.Eventually(t, 10*time.Second, "the tunnel to drain", func() bool {
		info, err := tun.Info(context.Background())
		return err != nil || info.State == messages.StateDraining
	})
	echoSmall(t, fresh, echo, 4, 20)
	controlEnds(t, fresh, drain+10*time.Second)
	if err := testutil.Await(t, closed, 30*time.Second, "Close"); err != nil {
		t.Fatalf("Close: %v", err)
	}
	sb := exitUDP(t, b, 1)
	if sb.UDP.DatagramsIn != 40 || sb.UDP.DatagramsOut != 40 {
		t.Fatalf("exit-b moved %d/%d datagrams, want the new association's 40/40", sb.UDP.DatagramsIn, sb.UDP.DatagramsOut)
	}
	cs, err := a.Stats(context.Background())
	if err != nil || cs.Client.UDP.Associations != 2 || cs.Client.ByEnd[messages.SideIncoming][messages.EndDrainTimeout] != 2 {
		t.Fatalf("client stats %+v (%v), want 2 associations ended by drain_timeout", cs.Client, err)
	}
}

// exitUDP waits until e's exit has ended n association halves and returns its stats.
func exitUDP(t testing.TB, e *engine.Engine, n uint64) messages.ConnectionStats {
	t.Helper()
	var st engine.Stats
	testutil.Eventually(t, 10*time.Second*raceSlowdown, "the exit's association halves to end", func() bool {
		st, _ = e.Stats(context.Background())
		return st.Exit.UDP.Associations == n && st.Exit.Active == 0
	})
	return st.Exit
}

// TestUDPUpdateInPlace: Tunnel.Update turns UDP ASSOCIATE off for associations that follow (0x07)
// while one already running goes on, and on again.
func TestUDPUpdateInPlace(t *testing.T) {
	e := startExitEngine(t, "exit-u", nil)
	spec := engine.TunnelSpec{Name: "u", Exit: "exit-u"}
	tun := openTunnelSpec(t, e, spec)
	echo := testutil.UDPEchoServer(t)
	running := associate(t, tun, "", "")
	update := func(disable bool) {
		t.Helper()
		s := spec
		s.SOCKS, s.HTTP, s.UDPBind = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1" // as openTunnelSpec opened it
		s.UDP.Disable = disable
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := tun.Update(ctx, s); err != nil {
			t.Fatalf("Update(disable=%v): %v", disable, err)
		}
	}
	update(true)
	var rep testutil.SOCKS5ReplyError
	if _, err := tryAssociate(tun, "", ""); !errors.As(err, &rep) || rep.Code != 0x07 {
		t.Fatalf("UDP ASSOCIATE after Update(disable): %v, want reply 0x07", err)
	}
	echoSmall(t, running, echo, 1, 10) // the running association is not touched
	update(false)
	echoSmall(t, associate(t, tun, "", ""), echo, 2, 10)
}

// TestUDPControlReset: a SOCKS5 connection reset by its client ends the association with reset on
// both of its sides (the other side's reason is the failing side's, as for TCP); the exit half
// ends at once.
func TestUDPControlReset(t *testing.T) {
	e := startExitEngine(t, "exit-r", nil)
	tun := openTunnel(t, e, "exit-r")
	echo := testutil.UDPEchoServer(t)
	c := associate(t, tun, "", "")
	echoSmall(t, c, echo, 1, 10)
	tcp, ok := c.Control().(*net.TCPConn)
	if !ok {
		t.Fatalf("control connection is a %T", c.Control())
	}
	_ = tcp.SetLinger(0)
	_ = tcp.Close()
	st := waitTunnelUDP(t, tun, 1)
	if in, out := st.ByEnd[messages.SideIncoming], st.ByEnd[messages.SideOutgoing]; in[messages.EndReset] != 1 || out[messages.EndReset] != 1 {
		t.Fatalf("ended by %v, want reset on both sides", st.ByEnd)
	}
	if x := exitUDP(t, e, 1); x.UDP.DatagramsIn != 10 || x.UDP.DatagramsOut != 10 {
		t.Fatalf("exit half moved %d/%d datagrams, want 10/10", x.UDP.DatagramsIn, x.UDP.DatagramsOut)
	}
}
