package signaling

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/warren-tunnel/warren/internal/testutil"
)

func startEmbedded(t *testing.T, o EmbeddedOptions) *server.Server {
	t.Helper()
	if o.Ready == 0 {
		o.Ready = 5 * time.Second
	}
	s, err := StartEmbedded(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

func connect(t *testing.T, o ConnectOptions) *nats.Conn {
	t.Helper()
	o.Timeout = 5 * time.Second
	nc, err := Connect(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// roundTrip checks that a request from a reaches a responder on b and the reply comes back.
func roundTrip(t *testing.T, a, b *nats.Conn) {
	t.Helper()
	sub, err := b.Subscribe("warren.test", func(m *nats.Msg) { _ = m.Respond(append([]byte("re: "), m.Data...)) })
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	msg, err := a.Request("warren.test", []byte("hi"), 5*time.Second)
	if err != nil {
		t.Fatalf("request: %v", err)
	}
	if string(msg.Data) != "re: hi" {
		t.Fatalf("reply %q", msg.Data)
	}
}

// TestEmbeddedWithoutListener: by default the embedded server opens no TCP listener at all; clients
// of this process reach it in-process.
func TestEmbeddedWithoutListener(t *testing.T) {
	s := startEmbedded(t, EmbeddedOptions{})
	if s.Addr() != nil || EmbeddedURL(s) != "" {
		t.Fatalf("listening on %v (%q); want no listener", s.Addr(), EmbeddedURL(s))
	}
	a := connect(t, ConnectOptions{InProcess: s, InboxPrefix: "_INBOX.client-a"})
	b := connect(t, ConnectOptions{InProcess: s})
	if got := a.ConnectedUrl(); got != InProcessURL {
		t.Errorf("connected URL %q, want %s", got, InProcessURL)
	}
	roundTrip(t, a, b)
}

// TestEmbeddedListenerLogin: with a listener and a user (or token), TCP and in-process clients
// alike log in with it; a wrong or missing one is ErrNATSAuth.
func TestEmbeddedListenerLogin(t *testing.T) {
	for _, tc := range []struct {
		name      string
		server    EmbeddedOptions
		good, bad ConnectOptions
	}{
		{"user", EmbeddedOptions{User: "u", Password: "p"}, ConnectOptions{User: "u", Password: "p"}, ConnectOptions{User: "u", Password: "x"}},
		{"token", EmbeddedOptions{Token: "t0k"}, ConnectOptions{Token: "t0k"}, ConnectOptions{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.server.Listen = netip.MustParseAddrPort("127.0.0.1:0")
			s := startEmbedded(t, tc.server)
			u := EmbeddedURL(s)
			if !strings.HasPrefix(u, "nats://127.0.0.1:") || strings.HasSuffix(u, ":0") {
				t.Fatalf("EmbeddedURL %q", u)
			}
			in := tc.good
			in.InProcess = s
			tcp := tc.good
			tcp.URLs = []string{u}
			roundTrip(t, connect(t, in), connect(t, tcp))
			// (Over TCP only: an engine's in-process connection always carries the credentials its
			// embedded server was started with.)
			bad := tc.bad
			bad.URLs, bad.Timeout = []string{u}, 5*time.Second
			nc, err := Connect(bad)
			if err == nil {
				nc.Close()
			}
			if !errors.Is(err, ErrNATSAuth) || !errors.Is(err, nats.ErrAuthorization) {
				t.Errorf("bad login: %v, want ErrNATSAuth", err)
			}
		})
	}
}

// TestEmbeddedListenAddressInUse fails at once, with the system's reason.
func TestEmbeddedListenAddressInUse(t *testing.T) {
	l := testutil.Listen(t)
	start := time.Now()
	s, err := StartEmbedded(EmbeddedOptions{Listen: netip.MustParseAddrPort(l.Addr().String()), Ready: 5 * time.Second})
	if err == nil {
		s.Shutdown()
		t.Fatal("started on an address in use")
	}
	if !errors.Is(err, ErrNATSUnavailable) || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("error %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v to fail", d)
	}
}

func TestConnectRedactsPasswords(t *testing.T) {
	_, err := Connect(ConnectOptions{URLs: []string{"nats://u:hunter2@127.0.0.1:1"}, Timeout: time.Second})
	if err == nil || strings.Contains(err.Error(), "hunter2") || !errors.Is(err, ErrNATSUnavailable) {
		t.Fatalf("error %v: want ErrNATSUnavailable without the password", err)
	}
}
