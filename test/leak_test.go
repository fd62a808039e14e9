package test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// TestCloseLeavesNothing runs a whole life — engine, exit, tunnel, traffic — and checks that
// Engine.Close leaves no goroutine behind and closes Events.
func TestCloseLeavesNothing(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	srv := newPayloadServer()
	e := startEngineNoCleanup(t)
	tun := openTunnel(t, e, "leak")
	if err := download(socksClient(t, tun), srv.URL, 7, 1<<20); err != nil {
		t.Fatal(err)
	}
	if err := download(httpProxyClient(t, tun), srv.URL, 8, 1<<20); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	testutil.AwaitClosed(t, e.Events(), 10*time.Second, "Events to close after Close returned")
}
