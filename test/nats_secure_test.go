package test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	natstest "github.com/nats-io/nats-server/v2/test"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/signaling"
)

// listenTCP gives an engine's embedded NATS server a loopback listener, so that other engines can
// join it with its NATSURL (without one, only the engine itself reaches it, in-process).
func listenTCP(c *engine.Config) { c.NATS.EmbeddedListen = "127.0.0.1:0" }

// testPKI is a CA and certificates signed by it, as PEM files in a test's temporary directory.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	CAFile string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "warren test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{dir: t.TempDir(), ca: ca, caKey: key}
	p.CAFile = p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(t *testing.T, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue makes a certificate for name (a DNS name; server and client use) and returns its files.
func (p *testPKI) issue(t *testing.T, name string, serial int64) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "PRIVATE KEY", keyDER)
}

// documentedNATSConfig returns the nats-server configuration of docs/security.md, so that the test
// runs exactly what operators are told to run.
func documentedNATSConfig(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/security.md")
	if err != nil {
		t.Fatal(err)
	}
	const heading = "## NATS: credentials, TLS and permissions"
	_, section, ok := strings.Cut(string(doc), heading)
	if !ok {
		t.Fatalf("docs/security.md has no %q section", heading)
	}
	_, block, ok := strings.Cut(section, "```conf\n")
	if !ok {
		t.Fatalf("docs/security.md: no ```conf block under %q", heading)
	}
	block, _, ok = strings.Cut(block, "```")
	if !ok {
		t.Fatal("docs/security.md: the ```conf block does not end")
	}
	return block
}

// secureNATS runs nats-server in-process with the documented configuration: TLS that verifies
// client certificates, user exit-1 for exit "exit-1" and user client-1 for clientID.
type secureNATS struct {
	url                      string
	pki                      *testPKI
	clientCert, clientKey    string
	exitPass, clientPass     string
	serverName               string
	clientID, clientIdentity string
}

func startSecureNATS(t *testing.T) *secureNATS {
	t.Helper()
	pki := newTestPKI(t)
	// The certificate names a host, not 127.0.0.1: engines must set nats.tls.server_name.
	s := &secureNATS{pki: pki, serverName: "nats.warren.test", exitPass: "exit-" + randomToken(t), clientPass: "client-" + randomToken(t)}
	serverCert, serverKey := pki.issue(t, s.serverName, 2)
	s.clientCert, s.clientKey = pki.issue(t, "engine.warren.test", 3)
	id, err := signaling.NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	s.clientID, s.clientIdentity = id.ID(), id.String()

	conf := strings.NewReplacer(
		`"/etc/nats/server.pem"`, quote(serverCert),
		`"/etc/nats/server-key.pem"`, quote(serverKey),
		`"/etc/nats/ca.pem"`, quote(pki.CAFile),
		"CLIENT_ID", s.clientID,
	).Replace(documentedNATSConfig(t))
	t.Setenv("EXIT_1_PASSWORD", s.exitPass)
	t.Setenv("CLIENT_1_PASSWORD", s.clientPass)
	path := filepath.Join(pki.dir, "nats-server.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatalf("the documented nats-server configuration: %v\n%s", err, conf)
	}
	opts.Host, opts.Port, opts.NoSigs = "127.0.0.1", -1, true
	srv := natstest.RunServer(opts)
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	s.url = srv.ClientURL()
	if !strings.HasPrefix(s.url, "tls://") {
		t.Fatalf("server URL %s: TLS is not on", s.url)
	}
	return s
}

func quote(s string) string { return `"` + s + `"` }

func randomToken(t *testing.T) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return strings.ToLower(new(big.Int).SetBytes(b).Text(36))
}

// natsConfig is what an engine of user writes in its nats: section.
func (s *secureNATS) natsConfig(user, password string) engine.NATSConfig {
	return engine.NATSConfig{URLs: []string{s.url}, User: user, Password: password,
		TLS: engine.NATSTLSConfig{CAFile: s.pki.CAFile, CertFile: s.clientCert, KeyFile: s.clientKey, ServerName: s.serverName}}
}

// rawConn connects as user with nats.go directly, collecting async errors (permission violations).
func (s *secureNATS) rawConn(t *testing.T, user, password, inboxPrefix string) (*nats.Conn, <-chan error) {
	t.Helper()
	errs := make(chan error, 16)
	caPEM, err := os.ReadFile(s.pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	cert, err := tls.LoadX509KeyPair(s.clientCert, s.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	// The server's certificate names serverName; 127.0.0.1 is dialed under that name.
	tc := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}, ServerName: s.serverName}
	opts := []nats.Option{nats.UserInfo(user, password), nats.Secure(tc),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case errs <- err:
			default:
			}
		})}
	if inboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(inboxPrefix))
	}
	nc, err := nats.Connect(s.url, opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// TestNATSWithTLSAndPermissions opens a tunnel through a nats-server that runs the configuration of
// docs/security.md: TLS with client certificates, and an exit and a client that each log in as their
// own user with only the permissions documented. Data is fetched through the tunnel and checked;
// the permissions are shown to bite; a wrong password and a client without TLS fail clearly.
func TestNATSWithTLSAndPermissions(t *testing.T) {
	ns := startSecureNATS(t)
	web := newPayloadServer()
	defer web.Close()

	x := startExitEngine(t, "exit-1", func(c *engine.Config) { c.NATS = ns.natsConfig("exit-1", ns.exitPass) })
	client := startEngine(t, engine.Config{Identity: ns.clientIdentity, NATS: ns.natsConfig("client-1", ns.clientPass)})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "exit-1", Pins: map[string]string{"exit-1": x.ClientID()}})
	if err := download(socksClient(t, tun), web.URL, 7, 1<<20); err != nil {
		t.Fatalf("download through the tunnel: %v", err)
	}
	// Reconfigure negotiates a new session: request, reply and goodbye all pass the permissions.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := tun.Reconfigure(ctx); err != nil {
		t.Fatalf("reconfigure: %v", err)
	}
	if err := download(socksClient(t, tun), web.URL, 8, 256<<10); err != nil {
		t.Fatalf("download after reconfigure: %v", err)
	}

	t.Run("permissions", func(t *testing.T) {
		// The client may not take an exit's requests, nor read inboxes other than its own.
		nc, errs := ns.rawConn(t, "client-1", ns.clientPass, "_INBOX."+ns.clientID)
		// It may ask for the exits on the discovery subject, and the exit may answer it there.
		answers := askExits(t, nc, 1, 1, 5*time.Second)
		if len(answers) != 1 || answers[0].err != nil || answers[0].a.ExitID != "exit-1" || answers[0].a.Identity != x.ClientID() {
			t.Errorf("discovery through the documented permissions: %+v, want exit-1's signed announcement", answers)
		}
		for _, subj := range []string{signaling.ExitSubject("exit-1"), "_INBOX.>", signaling.ClientSubject("someone-else")} {
			if _, err := nc.SubscribeSync(subj); err != nil {
				t.Fatal(err)
			}
			wantViolation(t, nc, errs, "Subscription to \""+subj+"\"")
		}
		// The exit may not publish into a client's inbox unasked, nor to another exit.
		xc, xerrs := ns.rawConn(t, "exit-1", ns.exitPass, "")
		for _, subj := range []string{"_INBOX." + ns.clientID + ".forged", signaling.ExitSubject("exit-2")} {
			if err := xc.Publish(subj, []byte("{}")); err != nil {
				t.Fatal(err)
			}
			wantViolation(t, xc, xerrs, "Publish to \""+subj+"\"")
		}
	})

	t.Run("wrong password", func(t *testing.T) {
		e, err := engine.New(engine.Config{Logger: testLogger(), Identity: ns.clientIdentity, NATS: ns.natsConfig("client-1", "not-the-password")})
		if err != nil {
			t.Fatal(err)
		}
		err = e.Start(ctx)
		_ = e.Close(context.Background())
		if !errors.Is(err, engine.ErrNATSAuth) || !strings.Contains(err.Error(), "nats.password") ||
			!strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
			t.Fatalf("Start with a wrong password: %v; want ErrNATSAuth, the server's reason and the field to check", err)
		}
	})

	t.Run("no TLS configured", func(t *testing.T) {
		cfg := ns.natsConfig("client-1", ns.clientPass)
		cfg.TLS = engine.NATSTLSConfig{}
		e, err := engine.New(engine.Config{Logger: testLogger(), Identity: ns.clientIdentity, NATS: cfg})
		if err != nil {
			t.Fatal(err)
		}
		err = e.Start(ctx)
		_ = e.Close(context.Background())
		if !errors.Is(err, engine.ErrNATSUnavailable) || !errors.Is(err, nats.ErrTLS) || !strings.Contains(err.Error(), "nats.tls") ||
			!strings.Contains(err.Error(), "certificate") {
			t.Fatalf("Start without nats.tls against a TLS server: %v; want a TLS error naming nats.tls", err)
		}
	})
}

// wantViolation waits for the server's permissions violation about what (it arrives asynchronously).
func wantViolation(t *testing.T, nc *nats.Conn, errs <-chan error, what string) {
	t.Helper()
	_ = nc.Flush()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), what) {
				return
			}
			t.Logf("other async error: %v", err)
		case <-deadline:
			t.Fatalf("no permissions violation for %s", what)
		}
	}
}

// TestEmbeddedListenerWithLogin: an engine's embedded server listens on a port for other processes
// and requires the configured user; an engine that logs in with it opens a tunnel through the first
// engine's exit; one with a wrong password is refused with ErrNATSAuth.
func TestEmbeddedListenerWithLogin(t *testing.T) {
	web := newPayloadServer()
	defer web.Close()
	x := startExitEngine(t, "hub", func(c *engine.Config) {
		c.NATS = engine.NATSConfig{EmbeddedListen: "127.0.0.1:0", User: "warren", Password: "s3cret"}
	})
	u := x.NATSURL()
	if host, _, err := net.SplitHostPort(strings.TrimPrefix(u, "nats://")); err != nil || host != "127.0.0.1" {
		t.Fatalf("NATSURL %q: want nats://127.0.0.1:port", u)
	}
	if got := x.NATSConnectedURL(); got != signaling.InProcessURL {
		t.Errorf("the exit engine's own connection is to %q, want in-process", got)
	}
	client := startEngine(t, engine.Config{NATS: engine.NATSConfig{URLs: []string{u}, User: "warren", Password: "s3cret"}})
	tun := openTunnelSpec(t, client, engine.TunnelSpec{Exit: "hub"})
	if err := download(socksClient(t, tun), web.URL, 3, 256<<10); err != nil {
		t.Fatalf("download: %v", err)
	}

	e, err := engine.New(engine.Config{Logger: testLogger(), NATS: engine.NATSConfig{URLs: []string{u}, User: "warren", Password: "wrong"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = e.Start(ctx)
	_ = e.Close(context.Background())
	if !errors.Is(err, engine.ErrNATSAuth) {
		t.Fatalf("Start with a wrong password: %v, want ErrNATSAuth", err)
	}
}

// TestEmbeddedInProcessOnly: with no nats settings at all, the embedded server has no listener and
// an engine serves an exit and a tunnel to it over its in-process connection.
func TestEmbeddedInProcessOnly(t *testing.T) {
	web := newPayloadServer()
	defer web.Close()
	e := startExitEngine(t, "solo", nil)
	if u := e.NATSURL(); u != "" {
		t.Fatalf("NATSURL %q: want none (no listener)", u)
	}
	if got := e.NATSConnectedURL(); got != signaling.InProcessURL {
		t.Fatalf("connected to %q, want %s", got, signaling.InProcessURL)
	}
	tun := openTunnelSpec(t, e, engine.TunnelSpec{Exit: "solo"})
	if err := download(socksClient(t, tun), web.URL, 5, 256<<10); err != nil {
		t.Fatalf("download: %v", err)
	}
}
