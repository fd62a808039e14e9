package signaling

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// ErrNATSUnavailable: no NATS server could be reached or started.
var ErrNATSUnavailable = errors.New("nats unavailable")

// StartEmbedded starts an in-process NATS server on host with a random port and waits until it
// accepts clients. The caller owns it and must Shutdown and WaitForShutdown it.
func StartEmbedded(host string, ready time.Duration) (*server.Server, error) {
	opts := &server.Options{
		Host:           host,
		Port:           server.RANDOM_PORT,
		NoLog:          true,
		NoSigs:         true,
		MaxPayload:     1 << 20,
		DontListen:     false,
		ServerName:     "warren-embedded",
		MaxControlLine: 4096,
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(ready) {
		s.Shutdown()
		s.WaitForShutdown()
		return nil, fmt.Errorf("embedded nats on %s not ready within %v: %w", host, ready, ErrNATSUnavailable)
	}
	return s, nil
}

// ConnState is a change of the NATS connection's state, delivered to the owner as a message.
type ConnState struct {
	Status nats.Status
	URL    string // the server connected to, when connected
	Err    error  // why it disconnected, if known
}

// Connect dials the NATS servers at urls (a cluster's servers, any order) and reconnects forever.
// onState is called on NATS's goroutines with every change of connection state; it must not block.
func Connect(urls []string, name string, timeout time.Duration, logger *slog.Logger, onState func(ConnState)) (*nats.Conn, error) {
	if len(urls) == 0 {
		return nil, fmt.Errorf("nats: no servers configured: %w", ErrNATSUnavailable)
	}
	servers := urls[0]
	for _, u := range urls[1:] {
		servers += "," + u
	}
	report := func(nc *nats.Conn, err error) {
		if onState != nil {
			onState(ConnState{Status: nc.Status(), URL: nc.ConnectedUrlRedacted(), Err: err})
		}
	}
	nc, err := nats.Connect(servers,
		nats.Name(name),
		nats.Timeout(timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.ReconnectJitter(100*time.Millisecond, time.Second),
		nats.RetryOnFailedConnect(false),
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) { report(nc, err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { report(nc, nil) }),
		nats.ClosedHandler(func(nc *nats.Conn) { report(nc, nil) }),
		nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			logger.Warn("nats async error", "subject", subj, "err", err)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w: %w", servers, ErrNATSUnavailable, err)
	}
	return nc, nil
}
