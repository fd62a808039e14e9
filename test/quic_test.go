package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/messages"
)

// quicALPN is the application protocol of the echo server of TestQUICThroughTunnel.
const quicALPN = "warren-test"

// quicTLS makes a self-signed ECDSA certificate for 127.0.0.1: the server's config (no ALPN
// set) and a pool that trusts it.
func quicTLS(t testing.TB) (*tls.Config, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "warren-test"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}}}, pool
}

// quicListenUDP is a UDP socket on 127.0.0.1 with a random port, closed at the test's end.
func quicListenUDP(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// quicEchoServer listens for QUIC on 127.0.0.1 (ALPN quicALPN) and echoes every stream of every
// connection until its peer closes its send side. At the test's end it stops, and fails the test
// if a stream failed or it did not stop within 10 s.
func quicEchoServer(t testing.TB, tlsConf *tls.Config) *net.UDPAddr {
	t.Helper()
	udp := quicListenUDP(t)
	tr := &quic.Transport{Conn: udp}
	conf := tlsConf.Clone()
	conf.NextProtos = []string{quicALPN}
	ln, err := tr.Listen(conf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		errs := make(chan error, 16)
		active := 0
		for {
			c, err := ln.Accept(context.Background())
			if err != nil {
				break // the listener closed
			}
			active++
			go func() { errs <- quicEcho(c) }()
		}
		var first error
		for range active {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		done <- first
	}()
	t.Cleanup(func() {
		ln.Close()
		tr.Close() // closes the connections, so each quicEcho returns
		if err, ok := testutil.Recv(done, 10*time.Second); !ok {
			t.Error("the echo server did not stop within 10 s")
		} else if err != nil {
			t.Errorf("echo server: %v", err)
		}
	})
	return udp.LocalAddr().(*net.UDPAddr)
}

// quicEcho echoes each stream the peer opens on c until c closes. It returns the first error of a
// stream, or nil when c ended with no stream failing.
func quicEcho(c *quic.Conn) error {
	for {
		str, err := c.AcceptStream(context.Background())
		if err != nil {
			return nil // the connection closed: by the peer, or by the transport at cleanup
		}
		n, err := io.Copy(str, str)
		if err != nil {
			return fmt.Errorf("echo after %d bytes: %w", n, err)
		}
		if err := str.Close(); err != nil {
			return err
		}
	}
}

// quicEchoOnce opens a stream on c, writes Payload(seed, n) on it and closes its send side while
// checking the echo, byte for byte, within 15 s.
func quicEchoOnce(ctx context.Context, c *quic.Conn, seed uint64, n int) error {
	str, err := c.OpenStreamSync(ctx)
	if err != nil {
		return err
	}
	if err := str.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		return err
	}
	wrote := make(chan error, 1)
	go func() {
		_, err := str.Write(testutil.PayloadBytes(seed, n))
		if err == nil {
			err = str.Close()
		}
		wrote <- err
	}()
	if err := testutil.CheckPayload(str, seed, int64(n)); err != nil {
		str.CancelWrite(0)
		<-wrote
		return fmt.Errorf("echo: %w", err)
	}
	return <-wrote
}

// TestQUICThroughTunnel runs QUIC over one SOCKS5 UDP association of a tunnel: a stream carrying
// 1 MiB to an echo server and back, checked byte for byte, then an HTTP/3 download and upload
// (1 MiB each, sha256 checked) on a second QUIC connection over the same association. The
// association is then closed by its client: the tunnel counts one, ended normally, that carried
// at least the payload each way and dropped nothing for a reason of its own.
func TestQUICThroughTunnel(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING", "true")
	e := startExitEngine(t, "quic", nil)
	tun := openTunnel(t, e, "quic")
	srvTLS, roots := quicTLS(t)
	echoAddr := quicEchoServer(t, srvTLS)
	h3Addr := quicH3Server(t, srvTLS)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pc, err := testutil.DialSOCKS5UDP(ctx, tun.SOCKSAddr(), "", "")
	if err != nil {
		t.Fatalf("UDP ASSOCIATE: %v", err)
	}
	tr := &quic.Transport{Conn: pc}
	closed := false
	closeClient := func() {
		if !closed {
			closed = true
			// The association's end; then the transport, whose reader has stopped on the closed
			// socket (Transport.Close does not close a Conn it was given).
			pc.Close()
			tr.Close()
		}
	}
	defer closeClient()

	const n = 1 << 20
	t.Run("stream-echo", func(t *testing.T) {
		c, err := tr.Dial(ctx, echoAddr, &tls.Config{RootCAs: roots, NextProtos: []string{quicALPN}}, &quic.Config{})
		if err != nil {
			t.Fatalf("QUIC handshake through the tunnel: %v", err)
		}
		defer c.CloseWithError(0, "done")
		if got := c.ConnectionState().TLS.NegotiatedProtocol; got != quicALPN {
			t.Errorf("ALPN %q, want %q", got, quicALPN)
		}
		conns := testutil.Poll(t, 5*time.Second, "the association in Tunnel.Connections",
			tun.Connections, func(cs []engine.ConnInfo) bool { return len(cs) == 1 })
		if conns[0].Kind != "socks5-udp" {
			t.Errorf("connection kind %q, want socks5-udp: %+v", conns[0].Kind, conns[0])
		}
		if err := quicEchoOnce(ctx, c, 15, n); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("http3", func(t *testing.T) {
		h3 := &http3.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
			Dial: func(ctx context.Context, addr string, tlsConf *tls.Config, conf *quic.Config) (*quic.Conn, error) {
				ua, err := net.ResolveUDPAddr("udp", addr)
				if err != nil {
					return nil, err
				}
				return tr.DialEarly(ctx, ua, tlsConf, conf)
			},
		}
		defer h3.Close()
		client := &http.Client{Transport: h3, Timeout: 15 * time.Second}
		base := "https://" + h3Addr.String()
		if err := download(client, base, 16, n); err != nil {
			t.Fatalf("HTTP/3 download: %v", err)
		}
		if err := upload(client, base, 17, n); err != nil {
			t.Fatalf("HTTP/3 upload: %v", err)
		}
	})

	closeClient()
	st := testutil.Poll(t, 10*time.Second, "the association to end", tun.Stats,
		func(st messages.ConnectionStats) bool { return st.UDP.Associations == 1 && st.Active == 0 })
	if st.Opened != 1 || st.Ended != 1 {
		t.Errorf("opened %d, ended %d; want one association", st.Opened, st.Ended)
	}
	if got := st.ByEnd[messages.SideIncoming][messages.EndNormal]; got != 1 {
		t.Errorf("incoming ends %v: want one normal (the client closed its control connection)", st.ByEnd[messages.SideIncoming])
	}
	// QUIC carried the payloads (stream echo 1 MiB each way, HTTP/3 1 MiB each way) plus its own
	// framing, headers and acknowledgements: at least 2 MiB of UDP payload each way.
	if st.Bytes.In < 2*n || st.Bytes.Out < 2*n {
		t.Errorf("bytes in %d, out %d: want at least %d each way", st.Bytes.In, st.Bytes.Out, 2*n)
	}
	// QUIC packets are at most 1452 bytes: the datagram counts bound the bytes from below.
	if st.UDP.DatagramsIn < st.Bytes.In/1452 || st.UDP.DatagramsOut < st.Bytes.Out/1452 {
		t.Errorf("datagrams in %d, out %d for bytes in %d, out %d", st.UDP.DatagramsIn, st.UDP.DatagramsOut, st.Bytes.In, st.Bytes.Out)
	}
	for r, k := range st.UDP.Dropped {
		// send_failed may count the server's path-MTU probes, which exceed the tunnel's MTU.
		if k != 0 && r != messages.DropSendFailed {
			t.Errorf("dropped %d datagrams for %s: %v", k, r, st.UDP.Dropped)
		}
	}
	t.Logf("association: %d datagrams in, %d out, %d bytes in, %d out, dropped %v",
		st.UDP.DatagramsIn, st.UDP.DatagramsOut, st.Bytes.In, st.Bytes.Out, st.UDP.Dropped)
}

// quicH3Server serves payloadHandler over HTTP/3 on 127.0.0.1 until the test's end.
func quicH3Server(t testing.TB, tlsConf *tls.Config) *net.UDPAddr {
	t.Helper()
	udp := quicListenUDP(t)
	srv := &http3.Server{Handler: payloadHandler, TLSConfig: http3.ConfigureTLSConfig(tlsConf.Clone())}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(udp) }()
	t.Cleanup(func() {
		srv.Close()
		udp.Close()
		if _, ok := testutil.Recv(done, 10*time.Second); !ok {
			t.Error("the HTTP/3 server did not stop within 10 s")
		}
	})
	return udp.LocalAddr().(*net.UDPAddr)
}
