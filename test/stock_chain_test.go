package test

// The stock chain of BenchmarkChain and BenchmarkConnectLatency: a minimal SOCKS5 front →
// upstream wireguard-go on upstream tun/netstack → the same at the far end → a plain forwarder →
// the target. No Warren code on the path.

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.zx2c4.com/wireguard/conn"
	"golang.zx2c4.com/wireguard/device"
	"golang.zx2c4.com/wireguard/tun/netstack"

	"github.com/warren-tunnel/warren/internal/testutil"
)

// stockChain builds the stock chain to sink and returns its SOCKS5 front's address; everything is
// closed at the benchmark's cleanup.
func stockChain(b *testing.B, sink string) string {
	b.Helper()
	srvAddr, cliAddr := netip.MustParseAddr("10.97.0.1"), netip.MustParseAddr("10.97.0.2")
	srvPriv, srvPub := testutil.KeyPair(b)
	cliPriv, cliPub := testutil.KeyPair(b)
	sdev, stnet := stockDevice(b, srvAddr, srvPriv, cliPub, "", netip.PrefixFrom(cliAddr, 32))
	state, err := sdev.IpcGet()
	if err != nil {
		b.Fatal(err)
	}
	var port string
	for _, l := range strings.Split(state, "\n") {
		if v, ok := strings.CutPrefix(l, "listen_port="); ok {
			port = v
		}
	}
	_, ctnet := stockDevice(b, cliAddr, cliPriv, srvPub, "127.0.0.1:"+port, netip.PrefixFrom(srvAddr, 32))
	var wg sync.WaitGroup
	b.Cleanup(wg.Wait)
	// The far end: a forwarder from the server's tunnel address to the sink.
	fwd, err := stnet.ListenTCPAddrPort(netip.AddrPortFrom(srvAddr, 9000))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fwd.Close() })
	wg.Go(func() {
		for {
			in, err := fwd.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				out, err := net.Dial("tcp", sink)
				if err != nil {
					in.Close()
					return
				}
				pipeStock(in, out)
			})
		}
	})
	// The front: SOCKS5 CONNECT (no auth), every target carried to the forwarder.
	front := testutil.Serve(b, func(in *net.TCPConn, _ <-chan struct{}) {
		if err := socksAccept(in); err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := ctnet.DialContextTCPAddrPort(ctx, netip.AddrPortFrom(srvAddr, 9000))
		cancel()
		if err != nil {
			return
		}
		pipeStock(in, out)
	})
	return front.Addr()
}

// socksAccept reads a SOCKS5 greeting and an IPv4 CONNECT and answers success.
func socksAccept(c net.Conn) error {
	var req [3 + 10]byte
	if _, err := io.ReadFull(c, req[:3]); err != nil || req[0] != 5 {
		return fmt.Errorf("greeting: %v", err)
	}
	if _, err := c.Write([]byte{5, 0}); err != nil {
		return err
	}
	if _, err := io.ReadFull(c, req[3:]); err != nil || req[3] != 5 || req[4] != 1 || req[6] != 1 {
		return fmt.Errorf("request: %v", err)
	}
	_, err := c.Write([]byte{5, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	return err
}

// pipeStock copies both ways until both directions end, passing a half-close on.
func pipeStock(a, b net.Conn) {
	defer a.Close()
	defer b.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(b, a)
		if cw, ok := b.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	_, _ = io.Copy(a, b)
	if cw, ok := a.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	<-done
}

// stockDevice starts upstream wireguard-go with its default bind on upstream tun/netstack, at addr
// (MTU 1420) with key priv and one peer: peerPub, routed allowed, at endpoint unless it is empty.
// It is closed at the test's or benchmark's cleanup.
func stockDevice(tb testing.TB, addr netip.Addr, priv, peerPub [32]byte, endpoint string, allowed ...netip.Prefix) (*device.Device, *netstack.Net) {
	tb.Helper()
	tdev, tnet, err := netstack.CreateNetTUN([]netip.Addr{addr}, nil, 1420)
	if err != nil {
		tb.Fatal(err)
	}
	dev := device.NewDevice(tdev, conn.NewDefaultBind(), &device.Logger{Verbosef: device.DiscardLogf, Errorf: tb.Logf})
	tb.Cleanup(dev.Close)
	cfg := fmt.Sprintf("private_key=%s\nlisten_port=0\npublic_key=%s\n", hex.EncodeToString(priv[:]), hex.EncodeToString(peerPub[:]))
	for _, p := range allowed {
		cfg += "allowed_ip=" + p.String() + "\n"
	}
	if endpoint != "" {
		cfg += "endpoint=" + endpoint + "\n"
	}
	if err := dev.IpcSet(cfg); err != nil {
		tb.Fatal(err)
	}
	if err := dev.Up(); err != nil {
		tb.Fatal(err)
	}
	return dev, tnet
}
