package signaling

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ErrNATSUnavailable: no NATS server could be reached or started.
var ErrNATSUnavailable = errors.New("nats unavailable")

// ErrNATSAuth: the NATS server refused the connection's credentials (user and password, token,
// NKey or JWT), or they expired or were revoked.
var ErrNATSAuth = errors.New("nats refused the credentials")

// InProcessURL is the server URL of a connection made in-process to the embedded server (no TCP):
// what the connection reports as its connected URL.
const InProcessURL = "nats://in-process:0"

// syncQueueLen bounds the channel of a synchronous subscription (one asker's inbox): the
// signaling actor's asks keep at most 64 answers pending (SetPendingLimits) anyway.
const syncQueueLen = 64

// EmbeddedOptions configure the embedded NATS server.
type EmbeddedOptions struct {
	// Listen is the TCP address other processes join on (port 0: a random one). The zero value
	// means no listener at all: only connections made in-process (Connect with InProcess) reach it.
	Listen netip.AddrPort
	// User and Password, or Token, are then required of every client, in-process ones included.
	User, Password string
	Token          string
	Ready          time.Duration // how long to wait for the server to accept clients
}

// StartEmbedded starts an in-process NATS server and waits until it accepts clients. The caller
// owns it and must Shutdown and WaitForShutdown it.
func StartEmbedded(o EmbeddedOptions) (*server.Server, error) {
	opts := &server.Options{
		NoLog:          true,
		NoSigs:         true,
		MaxPayload:     1 << 20,
		DontListen:     !o.Listen.IsValid(),
		ServerName:     "warren-embedded",
		MaxControlLine: 4096,
		Username:       o.User,
		Password:       o.Password,
		Authorization:  o.Token,
	}
	where := "in-process only"
	if o.Listen.IsValid() {
		where = o.Listen.String()
		// The server reports a failed bind only by never becoming ready: bind once here so that an
		// address in use or not on this host fails at once, with the system's reason.
		l, err := net.Listen("tcp", where)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: %w: %w", ErrNATSUnavailable, err)
		}
		_ = l.Close()
		opts.Host, opts.Port = o.Listen.Addr().String(), int(o.Listen.Port())
		if opts.Port == 0 {
			opts.Port = server.RANDOM_PORT // nats-server's port 0 means its default, 4222
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(o.Ready) || (o.Listen.IsValid() && s.Addr() == nil) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats (%s) not ready within %v: %w", where, o.Ready, ErrNATSUnavailable)
	}
	return s, nil
}

// EmbeddedURL is the client URL of the embedded server's listener ("" when it has none). A server
// listening on every interface is named by the loopback address.
func EmbeddedURL(s *server.Server) string {
	tcp, ok := s.Addr().(*net.TCPAddr)
	if !ok || tcp == nil {
		return ""
	}
	ip := tcp.IP
	if ip.IsUnspecified() {
		if ip.To4() != nil {
			ip = net.IPv4(127, 0, 0, 1)
		} else {
			ip = net.IPv6loopback
		}
	}
	return "nats://" + net.JoinHostPort(ip.String(), strconv.Itoa(tcp.Port))
}

// ConnState is a change of the NATS connection's state, delivered to the owner as a message.
type ConnState struct {
	Status nats.Status
	URL    string // the server connected to, when connected
	Err    error  // why it disconnected, if known
}

// ConnectOptions say where and how to connect to NATS.
type ConnectOptions struct {
	// URLs are the servers to dial (a cluster's servers, any order). Ignored with InProcess.
	URLs []string
	// InProcess, if set, is the embedded server, reached without TCP (nats.InProcessServer).
	InProcess nats.InProcessConnProvider
	Name      string        // the connection's name, shown by the server's monitoring
	Timeout   time.Duration // dial and handshake

	// Credentials: at most one of user and password, token, NKey seed file, credentials (JWT) file.
	User, Password  string
	Token           string
	NKeySeedFile    string
	CredentialsFile string
	// TLS, if set, makes the connection use TLS with this configuration (RootCAs, Certificates,
	// ServerName). Nil: plain, unless the server requires TLS (then the system's roots are used).
	TLS *tls.Config
	// InboxPrefix replaces nats.go's _INBOX for request replies (so server permissions can give
	// each client its own inbox subjects). Empty: _INBOX.
	InboxPrefix string

	Logger *slog.Logger
	// OnState is called on NATS's goroutines with every change of connection state; it must not block.
	OnState func(ConnState)
	// OnAsyncError is called on NATS's goroutines with every asynchronous error (a slow consumer's
	// dropped messages, a permissions violation); it must not block.
	OnAsyncError func(subject string, err error)
	// RetryOnFailedConnect: Connect does not fail when no server can be reached (or a login is
	// refused): it returns the connection, not yet connected, which keeps trying in the background
	// (subscriptions are made and publications buffered meanwhile); OnState reports the connect.
	RetryOnFailedConnect bool
}

// Connect connects to NATS as o says and reconnects forever (credential files are read again on
// every reconnect, so rotated credentials are picked up). A refused login wraps ErrNATSAuth; any
// other failure ErrNATSUnavailable (neither with RetryOnFailedConnect, which keeps trying).
func Connect(o ConnectOptions) (*nats.Conn, error) {
	servers := InProcessURL
	if o.InProcess == nil {
		if len(o.URLs) == 0 {
			return nil, fmt.Errorf("nats: no servers configured: %w", ErrNATSUnavailable)
		}
		servers = strings.Join(o.URLs, ",")
	}
	logger := o.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	report := func(nc *nats.Conn, err error) {
		if o.OnState != nil {
			o.OnState(ConnState{Status: nc.Status(), URL: nc.ConnectedUrlRedacted(), Err: err})
		}
	}
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.Timeout(o.Timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(o.RetryOnFailedConnect),
		// Each session request and health ping reads its answers from a synchronous subscription on
		// an inbox of its own; nats.go sizes such a subscription's channel at 65,536 messages
		// (512 KiB, allocated and zeroed per ping: half of 1,000 idle tunnels' CPU). A few answers
		// are all one asker waits for.
		nats.SyncQueueLen(syncQueueLen),
		// Keep trying after refused logins too: credentials may be fixed or rotated on the server.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) { report(nc, err) }),
		// Each failed dial while disconnected, so that its error is known. (A refused login during a
		// first connect that retries is not reported here: nats.go handles it without this callback,
		// which is why the signaling actor looks once at the connection's last error.)
		nats.ReconnectErrHandler(func(nc *nats.Conn, err error) { report(nc, err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { report(nc, nil) }),
		nats.ConnectHandler(func(nc *nats.Conn) { report(nc, nil) }), // the first connect (after a retried one, too)
		nats.ClosedHandler(func(nc *nats.Conn) { report(nc, nil) }),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			logger.Warn("nats async error", "subject", subj, "err", err)
			if o.OnAsyncError != nil {
				o.OnAsyncError(subj, err)
			}
		}),
	}
	if o.InProcess != nil {
		opts = append(opts, nats.InProcessServer(o.InProcess))
	}
	switch {
	case o.User != "" || o.Password != "":
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	case o.Token != "":
		opts = append(opts, nats.Token(o.Token))
	case o.NKeySeedFile != "":
		opt, err := nats.NkeyOptionFromSeed(o.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("nats nkey seed %s: %w", o.NKeySeedFile, err)
		}
		opts = append(opts, opt)
	case o.CredentialsFile != "":
		opts = append(opts, nats.UserCredentials(o.CredentialsFile))
	}
	if o.TLS != nil {
		opts = append(opts, nats.Secure(o.TLS))
	}
	if o.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(o.InboxPrefix))
	}
	nc, err := nats.Connect(servers, opts...)
	if err != nil {
		if errors.Is(err, nats.ErrAuthorization) || errors.Is(err, nats.ErrAuthExpired) ||
			errors.Is(err, nats.ErrAuthRevoked) || errors.Is(err, nats.ErrAccountAuthExpired) {
			return nil, fmt.Errorf("nats connect %s: %w: %w", RedactURLs(servers), ErrNATSAuth, err)
		}
		return nil, fmt.Errorf("nats connect %s: %w: %w", RedactURLs(servers), ErrNATSUnavailable, err)
	}
	return nc, nil
}

// RedactURLs is servers (comma-separated NATS URLs) with any password replaced by "xxxxx".
func RedactURLs(servers string) string {
	parts := strings.Split(servers, ",")
	for i, p := range parts {
		if u, err := url.Parse(p); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}
