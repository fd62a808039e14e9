package engine

import (
	"bufio"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// TestCounters: a scripted life of one tunnel — opened on x1, switched to x2, x2 shuts down (a
// goodbye: the tunnel reconnects to x1), closed — counts exactly its transitions and one
// reconnection of class exit_goodbye; the session requests' round trips are in the histogram.
func TestCounters(t *testing.T) {
	x1, c := exitAndClient(t, "cnt-x1", nil)
	x2 := startTestEngine(t, Config{NATS: NATSConfig{URLs: []string{x1.NATSURL()}},
		Exit: &ExitConfig{ID: "cnt-x2", Listen: "127.0.0.1:0", Egress: EgressConfig{AllowLoopback: true}, Open: true, DrainTimeout: -1}})
	ctx := testCtx(t)

	zero := c.Counters()
	if len(zero.Transitions) != 0 || zero.SignalingRTT.Count != 0 || len(zero.Reconnects) != len(messages.ReconnectCauses) {
		t.Fatalf("counters of a fresh engine: %+v", zero)
	}
	if h := zero.SignalingRTT; len(h.Bounds) != len(actors.SignalingRTTBounds) || len(h.Counts) != len(h.Bounds)+1 || h.Bounds[0] != .001 || h.Bounds[len(h.Bounds)-1] != 5 {
		t.Fatalf("histogram shape: %+v", h)
	}

	tun, err := c.OpenTunnel(ctx, TunnelSpec{Name: "cnt", Exit: "cnt-x1", Exits: []string{"cnt-x2"}, SOCKS: "127.0.0.1:0", UDPBind: "127.0.0.1",
		Health: HealthConfig{BackoffMin: Duration(50 * time.Millisecond), BackoffMax: Duration(200 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := tun.Switch(ctx, "cnt-x2"); err != nil {
		t.Fatal(err)
	}
	if err := x2.Close(ctx); err != nil { // it says goodbye: the tunnel reconnects, to x1
		t.Fatal(err)
	}
	testutil.Poll(t, 10*time.Second, "the tunnel up on cnt-x1 again", tun.Info, func(i TunnelInfo) bool {
		return i.State == messages.StateUp && i.ExitID == "cnt-x1" && i.Reconnects == 1
	})
	if err := tun.Close(ctx); err != nil {
		t.Fatal(err)
	}

	st := func(from, to messages.TunnelState) TunnelTransition { return TunnelTransition{from, to} }
	want := map[TunnelTransition]uint64{
		st(messages.StateNegotiating, messages.StateHandshaking): 1, st(messages.StateHandshaking, messages.StateUp): 1,
		st(messages.StateUp, messages.StateSwitching): 1, st(messages.StateSwitching, messages.StateUp): 1,
		st(messages.StateUp, messages.StateReconnecting): 1, st(messages.StateReconnecting, messages.StateUp): 1,
		st(messages.StateUp, messages.StateDraining): 1, st(messages.StateDraining, messages.StateClosing): 1,
		st(messages.StateClosing, messages.StateClosed): 1,
	}
	var got Counters
	testutil.Eventually(t, 5*time.Second, "the close counted", func() bool {
		got = c.Counters()
		return got.Transitions[st(messages.StateClosing, messages.StateClosed)] > 0
	})
	if !maps.Equal(got.Transitions, want) {
		t.Fatalf("transitions:\n got  %v\n want %v", got.Transitions, want)
	}
	for _, class := range messages.ReconnectCauses {
		if n, w := got.Reconnects[class], uint64(map[bool]int{true: 1}[class == messages.ReconnectExitGoodbye]); n != w {
			t.Errorf("reconnects of class %s: %d, want %d", class, n, w)
		}
	}
	h := got.SignalingRTT
	var sum uint64
	for _, n := range h.Counts {
		sum += n
	}
	// Three sessions were granted (open, switch, reconnect); pings add more.
	if h.Count < 3 || sum != h.Count || h.Sum <= 0 || h.Sum > float64(h.Count)*5 {
		t.Fatalf("signaling round trips: %+v", h)
	}
}

// connectVia opens a CONNECT tunnel to target through the HTTP proxy at proxyAddr.
func connectVia(t *testing.T, proxyAddr, target string) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", proxyAddr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", target, target)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %v %v", target, resp, err)
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// TestExitSessions: the exit lists its client sessions (client, addresses, since when, open
// flows); an engine without an exit, or whose exit drained, answers ErrNoExit.
func TestExitSessions(t *testing.T) {
	x, c := exitAndClient(t, "sess-x", nil)
	ctx := testCtx(t)
	if _, err := c.ExitSessions(ctx); !errors.Is(err, ErrNoExit) {
		t.Fatalf("ExitSessions without an exit: %v; want ErrNoExit", err)
	}
	if list, err := x.ExitSessions(ctx); err != nil || len(list) != 0 {
		t.Fatalf("sessions before any: %v, %v", list, err)
	}
	before := time.Now()
	tun, err := c.OpenTunnel(ctx, TunnelSpec{Name: "s", Exit: "sess-x", HTTP: "127.0.0.1:0", UDPBind: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	info, _ := tun.Info(ctx)
	// The tunnel's first probe is a flow on the exit until its end reaches the session.
	list := testutil.Poll(t, 5*time.Second, "one session, its open probe over", x.ExitSessions, func(l []ExitSession) bool {
		return len(l) == 1 && l[0].Flows == 0
	})
	s := list[0]
	if s.ID != info.SessionID || s.ClientID != c.ClientID() || !slices.Equal(s.Addresses, info.ClientAddresses) ||
		s.Since.Before(before) || s.LastActive.Before(s.Since) || s.Flows != 0 {
		t.Fatalf("session %+v; tunnel %+v, client %s", s, info, c.ClientID())
	}
	echo := testutil.EchoServer(t)
	conn := connectVia(t, tun.HTTPAddr(), echo.Addr())
	flows := func(n int) func([]ExitSession) bool {
		return func(l []ExitSession) bool { return len(l) == 1 && l[0].Flows == n }
	}
	testutil.Poll(t, 5*time.Second, "one flow", x.ExitSessions, flows(1))
	conn.Close()
	testutil.Poll(t, 5*time.Second, "no flow", x.ExitSessions, flows(0))
	if err := tun.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, 5*time.Second, "no session", x.ExitSessions, func(l []ExitSession) bool { return len(l) == 0 })
	if err := x.DrainExit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := x.ExitSessions(ctx); !errors.Is(err, ErrNoExit) {
		t.Fatalf("ExitSessions once drained: %v; want ErrNoExit", err)
	}
}
