package test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

// TestDeviceFailureNamesItsCause: a leg whose device cannot be created (its UDP bind address is
// not this host's) fails the open with the device's own error, not only "device stopped".
func TestDeviceFailureNamesItsCause(t *testing.T) {
	e := startExitEngine(t, "devfail", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := e.OpenTunnel(ctx, engine.TunnelSpec{Exit: "devfail", SOCKS: "127.0.0.1:0", UDPBind: "192.0.2.1"})
	if !errors.Is(err, engine.ErrDeviceFailed) || strings.Contains(err.Error(), "device stopped") {
		t.Fatalf("OpenTunnel with a foreign UDP bind address: %v; want ErrDeviceFailed with the device's cause", err)
	}
	t.Logf("OpenTunnel: %v", err)
}
