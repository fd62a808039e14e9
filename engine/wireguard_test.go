package engine

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// TestWireGuardExitLogsNoSecret: an engine logging at debug level through a tunnel's life on a
// WireGuard exit (up, a connection through it, a failed switch to a server that does not answer,
// a tunnel that keeps trying that server, a refused SetWireGuardExits, Close) writes neither
// client's private key nor the preshared key, in base64 or hex; nor does any error it returns.
func TestWireGuardExitLogsNoSecret(t *testing.T) {
	echo := testutil.EchoServer(t)
	srv := testutil.StartWGServer(t, testutil.WGServerConfig{Forward: map[uint16]string{7: echo.Addr()}})
	k := newWGKeys(t) // the second exit's: a server that does not answer, with a preshared key
	silent := k.inlineFull("silent")
	silent.Peer.Endpoint = testutil.FreeUDPAddr(t).String()
	var logs testutil.SyncBuffer
	e := startTestEngine(t, Config{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		WireGuardExits: []WireGuardExitSpec{{Name: "up", File: srv.WriteClientConfig(t)}, silent}})
	secrets := k.secrets()
	clientKey := srv.ClientKey()
	secrets = append(secrets, base64.StdEncoding.EncodeToString(clientKey[:]), hex.EncodeToString(clientKey[:]))
	var errs []error

	ctx := testCtx(t)
	// Keepalive off: with it, the device's first keepalive and the leg's forced handshake send
	// two initiations within a millisecond, the server drops the second as a flood, and the
	// answer to the first no longer matches: the leg waits for WireGuard's retry, 5 s later.
	tun, err := e.OpenTunnel(ctx, TunnelSpec{Name: "t", Exit: "wg:up", SOCKS: "127.0.0.1:0", HandshakeTimeout: d("2s"), Keepalive: -1})
	if err != nil {
		t.Fatal(err)
	}
	if err := echoThrough(tun.SOCKSAddr(), net.JoinHostPort(srv.Address().String(), "7")); err != nil {
		t.Fatalf("echo through wg:up: %v", err)
	}
	// Legs from now on wait 300ms for their handshake: the switch below fails fast.
	if err := tun.Update(ctx, TunnelSpec{Exit: "wg:up", SOCKS: "127.0.0.1:0", HandshakeTimeout: d("300ms"), Keepalive: -1}); err != nil {
		t.Fatal(err)
	}
	if err := tun.Switch(ctx, "wg:silent"); err == nil {
		t.Fatal("switched to a server that does not answer")
	} else {
		errs = append(errs, err)
	}
	if info, err := tun.Info(ctx); err != nil || info.State != messages.StateUp || info.ExitID != "wg:up" {
		t.Fatalf("after the failed switch: %+v, %v; want Up on wg:up", info, err)
	}
	p, err := e.StartTunnel(ctx, TunnelSpec{Name: "p", Exit: "wg:silent", SOCKS: "127.0.0.1:0", HandshakeTimeout: d("200ms"),
		Health: HealthConfig{BackoffMin: d("50ms"), BackoffMax: d("100ms")}})
	if err != nil {
		t.Fatal(err)
	}
	testutil.Poll(t, 10*time.Second, "p's first attempt to fail", func(ctx context.Context) (TunnelInfo, error) { return p.Info(ctx) },
		func(i TunnelInfo) bool { return i.State == messages.StateReconnecting })
	bad := k.inlineFull("bad")
	bad.Interface.PrivateKey = k.priv[:43]
	errs = append(errs, e.SetWireGuardExits([]WireGuardExitSpec{bad}))
	bad = k.inlineFull("bad")
	bad.Peer.PresharedKey = k.psk + "#"
	errs = append(errs, e.SetWireGuardExits([]WireGuardExitSpec{bad}))
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	if !strings.Contains(out, "wg:up") || !strings.Contains(out, "wg:silent") {
		t.Fatalf("the log does not name the exits (%d bytes): nothing was tested", len(out))
	}
	for _, s := range append(secrets, k.priv[:43]) {
		if strings.Contains(out, s) {
			t.Errorf("the log shows the secret %q", s)
		}
		for _, err := range errs {
			if err == nil || strings.Contains(err.Error(), s) {
				t.Errorf("error %v shows a secret (or is nil)", err)
			}
		}
	}
}

// echoThrough sends a message to target through the SOCKS5 proxy at socks and wants it back.
func echoThrough(socks, target string) error {
	return testutil.SOCKS5Echo(socks, target, []byte("through a WireGuard exit "+strconv.Itoa(len(socks))))
}
