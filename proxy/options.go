package proxy

import (
	"errors"
	"time"
)

// Authenticator decides whether a proxy client's credentials (SOCKS5 username/password, RFC 1929,
// or HTTP Proxy-Authorization: Basic) are valid. It is called from the connections' goroutines,
// concurrently.
type Authenticator interface {
	Authenticate(user, password string) bool
}

// AuthFunc is a function that implements Authenticator.
type AuthFunc func(user, password string) bool

// Authenticate calls f.
func (f AuthFunc) Authenticate(user, password string) bool { return f(user, password) }

// Options tune a proxy handshake and, for plain-HTTP sessions, ServeForward.
type Options struct {
	// Auth checks the client's credentials; nil: no authentication (SOCKS5 no-auth only).
	Auth Authenticator
	// HandshakeTimeout bounds reading the SOCKS5 greeting, authentication and request, or an HTTP
	// request head (counted from its first byte for the later requests of a keep-alive
	// connection); 0: DefaultHandshakeTimeout. It is separate from the ctx given to the handshake,
	// which bounds the whole handshake including the dial.
	HandshakeTimeout time.Duration
	// MaxHeaderBytes bounds an HTTP request head (431 beyond it); 0: MaxHeaderBytes.
	MaxHeaderBytes int
	// OnRequest is called once per HTTP request served by ServeForward (from its goroutine),
	// after the exchange; may be nil.
	OnRequest func(RequestLog)
	// Associate, when set, serves SOCKS5 UDP ASSOCIATE (docs/connections.md, "UDP"): it is called
	// once the request is read and authenticated, to open the association's tunnel side. Nil: the
	// request gets 0x07, command not supported.
	Associate AssociateFunc
}

// DefaultHandshakeTimeout is Options.HandshakeTimeout's default.
const DefaultHandshakeTimeout = 5 * time.Second

// Budget is the handshake budget these options give: HandshakeTimeout, or its default.
func (o Options) Budget() time.Duration { return o.handshakeTimeout() }

func (o Options) handshakeTimeout() time.Duration {
	if o.HandshakeTimeout > 0 {
		return o.HandshakeTimeout
	}
	return DefaultHandshakeTimeout
}

func (o Options) maxHeaderBytes() int {
	if o.MaxHeaderBytes > 0 {
		return o.MaxHeaderBytes
	}
	return MaxHeaderBytes
}

// RequestLog describes one HTTP request served by ServeForward, for the connection log.
type RequestLog struct {
	Method   string
	Target   Target        // where the request went (zero if it was refused before one was known)
	Status   int           // status sent to the client; 0 if none was
	BytesIn  int64         // request bytes accepted by the upstream (head and body, as forwarded)
	BytesOut int64         // response bytes accepted by the client (head and body, as forwarded)
	Duration time.Duration // from the request head to the end of the exchange
	Err      error         // why the exchange failed or ended the connection; nil if it completed
}

// Errors for authentication and the handshake budget.
var (
	// ErrAuth marks a client that gave no or wrong credentials. Its message may carry the user
	// name, never the password, and does not tell an unknown user from a wrong password.
	ErrAuth = errors.New("proxy: authentication failed")
	// ErrHandshakeTimeout marks a client that did not complete its SOCKS5 greeting,
	// authentication and request, or its HTTP request head, within Options.HandshakeTimeout.
	ErrHandshakeTimeout = errors.New("proxy: handshake timed out")
)
