package engine

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/netstack"
	"github.com/warren-tunnel/warren/signaling"
)

// ErrInvalidConfig is wrapped by every configuration error; a *FieldError names the field.
var ErrInvalidConfig = errors.New("invalid config")

// FieldError is a configuration error in one field, named by its YAML path (exit.subnet, tunnels[0].socks).
type FieldError struct {
	Field string
	Err   error
}

// Error names the field; it repeats at most a short prefix of an offending value (echoLimit).
func (e *FieldError) Error() string {
	return "config: " + cut(e.Field, maxField) + ": " + cut(e.Err.Error(), maxMessage)
}
func (e *FieldError) Unwrap() []error { return []error{ErrInvalidConfig, e.Err} }

func fieldErr(field string, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Duration is a time.Duration written as "10s" or "1m30s" in YAML.
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return scrub(err, string(b))
	}
	*d = Duration(v)
	return nil
}

// MarshalText prints the duration as Go does.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// Config configures an engine: its signaling, optionally an exit, and tunnels to open at start (`engine run`).
type Config struct {
	NATS NATSConfig `yaml:"nats"`
	// Identity is this engine's long-term client identity (base64 ed25519 seed, `engine keygen`
	// prints one). Empty: a fresh identity for every start.
	Identity string       `yaml:"identity"`
	Exit     *ExitConfig  `yaml:"exit"`
	Tunnels  []TunnelSpec `yaml:"tunnels"`
	// WireGuardExits are standard WireGuard servers usable as exits, by the id "wg:" + name
	// (docs/wireguard.md).
	WireGuardExits []WireGuardExitSpec `yaml:"wireguard_exits"`
	// Trust says which exits this engine's tunnels accept and which operators certify exits and
	// clients (docs/security.md).
	Trust    TrustConfig  `yaml:"trust"`
	Logger   *slog.Logger `yaml:"-"`         // nil: discard
	LogLevel string       `yaml:"log_level"` // for cmd/engine: debug, info (default), warn, error
	// LogFormat is cmd/engine's log format: text (default: key=value lines) or json (one object a
	// line, for log shippers).
	LogFormat string `yaml:"log_format"`
}

// TrustConfig is the engine's trust on a shared NATS bus (docs/security.md).
type TrustConfig struct {
	// Operators are operator public keys (`engine keygen --operator`). Their exit certificates make
	// exits trusted by this engine's tunnels; their client certificates admit clients to this
	// engine's exit.
	Operators []string `yaml:"operators"`
	// Certificate is this engine's client certificate from an operator (`engine certify --kind
	// client`), sent with its session requests.
	Certificate string `yaml:"certificate"`
	// AnyExit accepts any identity for an exit that is not pinned and presents no certificate from
	// a trusted operator. Insecure on a shared bus (anyone may answer as the exit): logged at warn
	// on every start. Not needed with the embedded NATS server and no listener (a private bus).
	AnyExit bool `yaml:"any_exit"`
}

// NATSConfig says where signaling runs and how the engine logs in (docs/security.md).
type NATSConfig struct {
	// URLs of NATS servers (several for a cluster). Empty: start an embedded server, which this
	// engine reaches in-process (no TCP).
	URLs []string `yaml:"urls"`
	// EmbeddedListen is a TCP address (IP:port, port 0 picks one) on which the embedded server also
	// takes other engines (of this process or others). Empty: no listener at all. Off loopback it needs User and
	// Password, or Token, which the embedded server then requires of every client.
	EmbeddedListen string `yaml:"embedded_listen"`
	// Deprecated: replaced by EmbeddedListen (the embedded server no longer listens unless asked);
	// setting it is a configuration error that says so.
	EmbeddedHost   string   `yaml:"embedded_host"`
	ConnectTimeout Duration `yaml:"connect_timeout"` // default 5s

	// Credentials: at most one of User and Password, Token, NKeySeedFile, CredentialsFile.
	User            string `yaml:"user"`
	Password        string `yaml:"password"`
	Token           string `yaml:"token"`
	NKeySeedFile    string `yaml:"nkey_seed_file"`   // a file holding an NKey user seed (SU…)
	CredentialsFile string `yaml:"credentials_file"` // a .creds file: user JWT and NKey seed
	// TLS to the servers in URLs. Any field set turns TLS on.
	TLS NATSTLSConfig `yaml:"tls"`
	// WaitOnStart: Start does not fail when no server in URLs can be reached (or the login is
	// refused): it connects in the background, retrying as after a disconnect. Meanwhile tunnels
	// opened with StartTunnel wait in Reconnecting, and the exit serves once NATS is there;
	// Engine.NATSStatus tells. Needs URLs (the embedded server is always there).
	WaitOnStart bool `yaml:"wait_on_start"`
}

// NATSTLSConfig is the TLS of the connection to NATS.
type NATSTLSConfig struct {
	CAFile     string `yaml:"ca_file"`     // PEM CA certificates that sign the servers'; default: the system's roots
	CertFile   string `yaml:"cert_file"`   // PEM client certificate, for servers that verify clients
	KeyFile    string `yaml:"key_file"`    // its PEM private key
	ServerName string `yaml:"server_name"` // the name the server's certificate must carry; default: the URL's host
}

// ExitConfig makes this engine an exit.
type ExitConfig struct {
	ID string `yaml:"id"` // 1-64 of A-Z a-z 0-9 _ -
	// PrivateKey is the exit's WireGuard key (base64). Empty: fresh for every start (static peers then need it set).
	PrivateKey string `yaml:"private_key"`
	// Listen is the UDP address of the WireGuard device. Default 127.0.0.1:0 (a random port on loopback).
	Listen string `yaml:"listen"`
	// Endpoint is the address clients are told to send WireGuard packets to. Default: the bound
	// Listen address; required when Listen's address is unspecified (0.0.0.0 or ::).
	Endpoint       string       `yaml:"endpoint"`
	Subnet         string       `yaml:"subnet"`       // tunnel addresses; default 10.77.0.0/16; the exit takes the first
	MTU            int          `yaml:"mtu"`          // default 1420
	ConnectPort    uint16       `yaml:"connect_port"` // default 7070
	Egress         EgressConfig `yaml:"egress"`
	StaticPeers    []StaticPeer `yaml:"static_peers"`
	AllowedClients []string     `yaml:"allowed_clients"` // client identity ids admitted (besides operator-certified clients)
	// Open admits any client with a valid signature. Required for an exit on a shared bus (nats.urls
	// or nats.embedded_listen) that has neither allowed_clients nor trust.operators; implied on a
	// private embedded bus.
	Open bool `yaml:"open"`
	// Certificate is this exit's certificate from an operator (`engine certify --kind exit`),
	// presented in every session response; clients that trust the operator then trust this exit.
	Certificate string `yaml:"certificate"`
	// MaxSessionsPerClient bounds the sessions one client identity holds at once; default 16, -1 unlimited.
	MaxSessionsPerClient int `yaml:"max_sessions_per_client"`
	// RequestsPerSecond bounds one client identity's session requests (a token bucket of
	// RequestBurst); over it the request is refused "unavailable" and the client retries. Default
	// 10, -1 unlimited.
	RequestsPerSecond float64  `yaml:"requests_per_second"`
	RequestBurst      int      `yaml:"request_burst"`    // default 20
	ConnectTimeout    Duration `yaml:"connect_timeout"`  // per destination dial; default 10s
	UDPIdleTimeout    Duration `yaml:"udp_idle_timeout"` // default 60s; UDP flows and the exit's half of SOCKS5 UDP associations
	// UDPMaxDestinations bounds the destinations one SOCKS5 UDP association sends to; datagrams to
	// more are dropped (and the client told). Default 256, -1 unlimited.
	UDPMaxDestinations int        `yaml:"udp_max_destinations"`
	Connections        ConnLimits `yaml:"connections"` // forwarded TCP connections
	// MaxConnectionsPerSession bounds a session's (or static peer's) flows at once; default 1024,
	// -1 unlimited. Each flow holds a host socket on the exit.
	MaxConnectionsPerSession int `yaml:"max_connections_per_session"`
	// SessionIdleTimeout releases a session whose client sent nothing (no packet, no signed ping)
	// for this long (a client that died without a goodbye; live tunnels send keepalives, probes and
	// pings). Default 3m; negative: never.
	SessionIdleTimeout Duration `yaml:"session_idle_timeout"`
	// Labels describe the exit in its announcements (e.g. region: eu), for clients that choose exits
	// by label: at most 16; keys 1-32 of a-z 0-9 _ . - (starting with a letter or digit), values
	// 0-64 of A-Z a-z 0-9 _ . : / -.
	Labels map[string]string `yaml:"labels"`
	// AnnounceInterval is the cadence of the exit's signed announcements on
	// warren.v1.exits.announce (docs/signaling.md). Default 10s; 50ms-10m; negative: the exit
	// neither announces nor answers discovery.
	AnnounceInterval Duration `yaml:"announce_interval"`
	// DrainTimeout is how long a draining exit (Engine.DrainExit, Engine.Close, SIGTERM) lets its
	// forwarded flows run while its clients move to other exits; the drain ends earlier once no
	// session or no flow is left. Default 5s; 1ms-1h; negative: no drain (the exit ends at once).
	DrainTimeout Duration `yaml:"drain_timeout"`
}

// ConnLimits are the time limits of proxied or forwarded connections.
type ConnLimits struct {
	IdleTimeout          Duration `yaml:"idle_timeout"`           // no bytes either way; default 5m; negative: off
	KeepaliveIdleTimeout Duration `yaml:"keepalive_idle_timeout"` // for connections whose client sends TCP keep-alive probes; default 2h
	MaxLifetime          Duration `yaml:"max_lifetime"`           // default 0: none
	CloseGrace           Duration `yaml:"close_grace"`            // after a graceful end (FIN), reset after this; default 1s
	// IdleExempt lists targets never ended for inactivity: host:port patterns ("*.example.com:443",
	// "*:22", "10.0.0.0/8:*", "[2001:db8::1]:5222").
	IdleExempt []string `yaml:"idle_exempt"`
}

// EgressConfig is the exit's egress policy: which destinations it refuses. By default it refuses
// every special-purpose range (netstack.EgressPolicy lists them), each category with its switch,
// and IPv6 forms (IPv4-mapped, NAT64, 6to4, Teredo) of refused IPv4 addresses.
type EgressConfig struct {
	AllowLoopback      bool     `yaml:"allow_loopback"`      // 127/8, ::1
	AllowPrivate       bool     `yaml:"allow_private"`       // 10/8, 172.16/12, 192.168/16, fc00::/7, 64:ff9b:1::/48
	AllowLinkLocal     bool     `yaml:"allow_link_local"`    // 169.254/16, fe80::/10
	AllowCGNAT         bool     `yaml:"allow_cgnat"`         // 100.64/10
	AllowMulticast     bool     `yaml:"allow_multicast"`     // 224/4, ff00::/8, 255.255.255.255
	AllowDocumentation bool     `yaml:"allow_documentation"` // 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20
	AllowBenchmarking  bool     `yaml:"allow_benchmarking"`  // 198.18/15, 2001:2::/48
	AllowReserved      bool     `yaml:"allow_reserved"`      // 0/8, 192.0.0/24, 240/4, IPv6 outside 2000::/3, 2001::/23
	Allow              []string `yaml:"allow"`               // CIDRs allowed even if a category refuses them
	Deny               []string `yaml:"deny"`                // CIDRs always refused
}

// StaticPeer is a standard WireGuard client of the exit (as a wg-quick [Peer] section), with no signaling.
type StaticPeer struct {
	Name       string   `yaml:"name"`
	PublicKey  string   `yaml:"public_key"`
	AllowedIPs []string `yaml:"allowed_ips"` // the peer's tunnel addresses, e.g. 10.77.200.2/32
}

// TunnelSpec asks for a client tunnel to an exit, behind local proxies.
type TunnelSpec struct {
	Name string `yaml:"name"` // default: tunnel-N
	Exit string `yaml:"exit"` // exit id
	// SOCKS and HTTP are the proxies' listen addresses; at least one. Port 0 picks a free port.
	SOCKS string `yaml:"socks"`
	HTTP  string `yaml:"http"`
	// UDPBind is the local address of the WireGuard UDP socket. Default: the local address the host
	// routes towards the exit's endpoint (127.0.0.1 for an exit on loopback). Never every interface.
	UDPBind          string     `yaml:"udp_bind"`
	HandshakeTimeout Duration   `yaml:"handshake_timeout"` // session and first handshake; default 10s
	ConnectTimeout   Duration   `yaml:"connect_timeout"`   // each proxied connection's dial; default 10s
	Keepalive        int        `yaml:"keepalive"`         // WireGuard persistent keepalive seconds; default 25, -1 off
	Connections      ConnLimits `yaml:"connections"`
	// DrainTimeout is how long Close and Switch let active connections finish; default 5s.
	DrainTimeout            Duration `yaml:"drain_timeout"`
	MaxConnections          int      `yaml:"max_connections"`            // at once through this tunnel; default 4096, -1 unlimited
	MaxConnectionsPerSource int      `yaml:"max_connections_per_source"` // at once from one source address; 0 unlimited
	// Exits are failover exits, tried in order after Exit when the tunnel has to reconnect.
	Exits []string `yaml:"exits"`
	// Pins maps exit ids (Exit's and the failover exits') to the only identity accepted for each
	// (the exit engine's `ClientID`, printed by `engine keygen --identity`). A pinned exit that
	// answers with another identity is refused, even with a valid certificate.
	Pins map[string]string `yaml:"pins"`
	// Auth is who may use the proxies (docs/security.md); Handshake bounds clients that have not
	// yet said where they go.
	Auth      ProxyAuth       `yaml:"auth"`
	Handshake HandshakeLimits `yaml:"handshake"`
	Health    HealthConfig    `yaml:"health"`
	// UDP is the SOCKS5 proxy's UDP ASSOCIATE (docs/connections.md, "UDP").
	UDP UDPConfig `yaml:"udp"`
}

// UDPConfig sets a tunnel's SOCKS5 UDP associations: each is a proxy connection (it counts against
// max_connections) whose datagrams travel through the tunnel and are sent on by the exit.
type UDPConfig struct {
	// Disable refuses UDP ASSOCIATE (SOCKS5 reply 0x07, command not supported).
	Disable bool `yaml:"disable"`
	// IdleTimeout ends an association that carried no datagram either way for this long
	// (inactivity); default 60s, 1s-24h.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// MaxAssociations bounds the tunnel's associations at once; over it the request gets 0x01.
	// Default 256, -1 unlimited.
	MaxAssociations int `yaml:"max_associations"`
}

// HealthConfig is a tunnel's health policy (docs/health.md). Zero values take the defaults.
type HealthConfig struct {
	Interval          Duration `yaml:"interval"`           // data-plane check period; default 1s
	ProbeTimeout      Duration `yaml:"probe_timeout"`      // one probe through the tunnel, shorter than interval; default 750ms (3/4 of an interval of 750ms or less)
	Failures          int      `yaml:"failures"`           // failed checks in a row before reconnecting; default 3
	SignalingInterval Duration `yaml:"signaling_interval"` // session ping period; default 2s
	SignalingTimeout  Duration `yaml:"signaling_timeout"`  // one ping; default 2s
	SignalingFailures int      `yaml:"signaling_failures"` // failed pings in a row before Degraded; default 2
	ReconnectWait     Duration `yaml:"reconnect_wait"`     // how long new proxy connections wait for a reconnect; default 10s
	BackoffMin        Duration `yaml:"backoff_min"`        // first wait between reconnection attempts; default 250ms
	BackoffMax        Duration `yaml:"backoff_max"`        // longest wait; default 10s
}

func (h HealthConfig) resolve(path string) (actors.HealthPolicy, actors.Backoff, time.Duration, error) {
	var p actors.HealthPolicy
	var b actors.Backoff
	var wait time.Duration
	for _, d := range []struct {
		field       string
		in          Duration
		out         *time.Duration
		def, lo, hi time.Duration
	}{
		{"interval", h.Interval, &p.Interval, time.Second, 50 * time.Millisecond, time.Minute},
		{"probe_timeout", h.ProbeTimeout, &p.ProbeTimeout, 750 * time.Millisecond, 10 * time.Millisecond, time.Minute},
		{"signaling_interval", h.SignalingInterval, &p.SignalingInterval, 2 * time.Second, 50 * time.Millisecond, 5 * time.Minute},
		{"signaling_timeout", h.SignalingTimeout, &p.SignalingTimeout, 2 * time.Second, 10 * time.Millisecond, time.Minute},
		{"reconnect_wait", h.ReconnectWait, &wait, 10 * time.Second, 10 * time.Millisecond, 5 * time.Minute},
		{"backoff_min", h.BackoffMin, &b.Min, 250 * time.Millisecond, 10 * time.Millisecond, time.Minute},
		{"backoff_max", h.BackoffMax, &b.Max, 10 * time.Second, 10 * time.Millisecond, time.Hour},
	} {
		v, err := durationIn(path+"."+d.field, d.in, d.def, d.lo, d.hi, false)
		if err != nil {
			return p, b, 0, err
		}
		*d.out = v
	}
	var err error
	if p.Failures, err = countIn(path+".failures", h.Failures, 3, maxHealthRuns, ""); err != nil {
		return p, b, 0, err
	}
	if p.SignalingFailures, err = countIn(path+".signaling_failures", h.SignalingFailures, 2, maxHealthRuns, ""); err != nil {
		return p, b, 0, err
	}
	if b.Max < b.Min {
		return p, b, 0, fieldErr(path+".backoff_max", "%v is below backoff_min %v", b.Max, b.Min)
	}
	// A probe is judged within its round: it must end before the next check. Left unset, it is
	// shortened to three quarters of a short interval.
	if p.ProbeTimeout >= p.Interval {
		if h.ProbeTimeout != 0 {
			return p, b, 0, fieldErr(path+".probe_timeout", "%v not in [10ms, %v): it must be shorter than interval", p.ProbeTimeout, p.Interval)
		}
		p.ProbeTimeout = p.Interval * 3 / 4
	}
	return p, b, wait, nil
}

// Defaults.
const (
	DefaultSubnet           = "10.77.0.0/16"
	DefaultConnectPort      = netstack.DefaultConnPort
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultConnectTimeout   = 10 * time.Second
	DefaultUDPIdleTimeout   = 60 * time.Second
	DefaultMaxAssociations  = 256
	DefaultUDPDestinations  = 256
	DefaultKeepalive        = 25
	DefaultIdleTimeout      = 5 * time.Minute
	DefaultKeepaliveIdle    = 2 * time.Hour
	DefaultCloseGrace       = time.Second
	DefaultMaxConnections   = 4096
	DefaultDrainTimeout     = 5 * time.Second
	// An exit's announcements and drain (docs/signaling.md).
	DefaultAnnounceInterval = 10 * time.Second
	DefaultExitDrainTimeout = 5 * time.Second
	// Exit admission limits (docs/security.md).
	DefaultMaxSessionsPerClient     = 16
	DefaultRequestsPerSecond        = 10
	DefaultRequestBurst             = 20
	DefaultMaxConnectionsPerSession = 1024
)

type resolvedLimits struct {
	idle, keepaliveIdle, lifetime, grace time.Duration
	exempt                               []actors.TargetPattern
}

func (l *ConnLimits) resolve(path string) (resolvedLimits, error) {
	var r resolvedLimits
	var err error
	if r.idle, err = durationIn(path+".idle_timeout", l.IdleTimeout, DefaultIdleTimeout, minTimeout, maxIdle, true); err != nil {
		return r, err
	}
	if r.keepaliveIdle, err = durationIn(path+".keepalive_idle_timeout", l.KeepaliveIdleTimeout, DefaultKeepaliveIdle, minTimeout, maxIdle, false); err != nil {
		return r, err
	}
	if r.lifetime, err = durationIn(path+".max_lifetime", l.MaxLifetime, 0, minTimeout, maxLifetime, false); err != nil {
		return r, err
	}
	if r.grace, err = durationIn(path+".close_grace", l.CloseGrace, DefaultCloseGrace, time.Millisecond, time.Minute, false); err != nil {
		return r, err
	}
	for i, p := range l.IdleExempt {
		tp, err := actors.ParseTargetPattern(p)
		if err != nil {
			return r, fieldErr(fmt.Sprintf("%s.idle_exempt[%d]", path, i), "%w", scrub(err, p))
		}
		r.exempt = append(r.exempt, tp)
	}
	return r, nil
}

func (r resolvedLimits) timeouts(setup time.Duration) actors.ConnTimeouts {
	return actors.ConnTimeouts{Setup: setup, Idle: r.idle, KeepaliveIdle: r.keepaliveIdle, MaxLifetime: r.lifetime,
		Grace: r.grace, IdleExempt: actors.MatchAny(r.exempt)}
}

func orDuration(d Duration, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return time.Duration(d)
}

// Validate checks the whole configuration; the error names the first bad field.
func (c *Config) Validate() error {
	_, err := c.validate()
	return err
}

// validate is Validate, returning the WireGuard exits it resolved (read from their files) so that
// New uses what was checked rather than reading the files again.
func (c *Config) validate() (map[string]*actors.WireGuardExit, error) {
	if c.Identity != "" {
		if _, err := signaling.ParseIdentity(c.Identity); err != nil {
			return nil, fieldErr("identity", "%v", err)
		}
	}
	if _, err := c.NATS.resolve(); err != nil {
		return nil, err
	}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		return nil, fieldErr("log_level", "%q is not one of debug, info, warn, error", echoValue(c.LogLevel))
	}
	switch c.LogFormat {
	case "", "text", "json":
	default:
		return nil, fieldErr("log_format", "%q is not one of text, json", echoValue(c.LogFormat))
	}
	if err := c.Trust.validate(c.Identity); err != nil {
		return nil, err
	}
	if c.Exit != nil {
		if _, err := c.Exit.resolve(); err != nil {
			return nil, err
		}
		if c.Exit.Certificate != "" {
			if err := checkExitCert(c.Exit.Certificate, c.Exit.ID, c.Identity); err != nil {
				return nil, err
			}
		}
		if c.NATS.shared() && !c.Exit.Open && len(c.Exit.AllowedClients) == 0 && len(c.Trust.Operators) == 0 {
			return nil, fieldErr("exit.allowed_clients", "an exit on a shared NATS bus must name allowed_clients, trust operators that certify clients, or declare open: true")
		}
	}
	wg, err := resolveWireGuardExits(c.WireGuardExits, "wireguard_exits")
	if err != nil {
		return nil, err
	}
	names, onWG := map[string]bool{}, map[string]int{}
	for i := range c.Tunnels {
		t, err := c.Tunnels[i].resolve(fmt.Sprintf("tunnels[%d]", i), i)
		if err != nil {
			return nil, err
		}
		if err := checkWireGuardRefs(&c.Tunnels[i], fmt.Sprintf("tunnels[%d]", i), wg); err != nil {
			return nil, err
		}
		if x := c.Tunnels[i].Exit; actors.IsWireGuardExit(x) {
			// One key is one peer at one endpoint: two tunnels on it take each other's replies.
			if first, dup := onWG[x]; dup {
				return nil, fieldErr(fmt.Sprintf("tunnels[%d].exit", i), "%q is already tunnels[%d]'s exit: a WireGuard exit carries one tunnel at a time (one key, one peer)", x, first)
			}
			onWG[x] = i
		}
		if names[t.name] {
			return nil, fieldErr(fmt.Sprintf("tunnels[%d].name", i), "%q used twice", t.name)
		}
		if err := c.checkTunnelTrust(&c.Tunnels[i], fmt.Sprintf("tunnels[%d]", i)); err != nil {
			return nil, err
		}
		names[t.name] = true
	}
	if err := c.checkListens(); err != nil { // clashing listeners are found here, before anything binds
		return nil, err
	}
	return wg, nil
}

type resolvedTunnel struct {
	name             string
	handshake        resolvedHandshake
	health           actors.HealthPolicy
	backoff          actors.Backoff
	reconnectWait    time.Duration
	limits           resolvedLimits
	maxConns         int
	udpBind          netip.Addr
	handshakeTimeout time.Duration
	connectTimeout   time.Duration
	keepalive        int
	udp              actors.UDPLimits
}

func (t *TunnelSpec) resolve(path string, index int) (resolvedTunnel, error) {
	var err error
	r := resolvedTunnel{name: t.Name, keepalive: t.Keepalive}
	if r.name == "" {
		r.name = "tunnel-" + strconv.Itoa(index)
	} else if err := signaling.ValidID(r.name); err != nil {
		return r, fieldErr(path+".name", "%w", err)
	}
	if err := validExitRef(t.Exit); err != nil {
		return r, fieldErr(path+".exit", "%w", err)
	}
	if err := t.checkProxyListens(path); err != nil {
		return r, err
	}
	if err := t.checkExits(path); err != nil {
		return r, err
	}
	if t.UDPBind != "" {
		var a netip.Addr
		a, err = netip.ParseAddr(t.UDPBind)
		if err != nil {
			return r, fieldErr(path+".udp_bind", "%w", scrub(err, t.UDPBind))
		}
		if a.IsUnspecified() {
			return r, fieldErr(path+".udp_bind", "must be one address, not %s (every interface)", a)
		}
		if a.IsMulticast() {
			return r, fieldErr(path+".udp_bind", "%s is a multicast address", a)
		}
		r.udpBind = a
	}
	if r.handshakeTimeout, err = durationIn(path+".handshake_timeout", t.HandshakeTimeout, DefaultHandshakeTimeout, minTimeout, maxTimeout, false); err != nil {
		return r, err
	}
	if r.connectTimeout, err = durationIn(path+".connect_timeout", t.ConnectTimeout, DefaultConnectTimeout, minTimeout, maxTimeout, false); err != nil {
		return r, err
	}
	if _, err = durationIn(path+".drain_timeout", t.DrainTimeout, DefaultDrainTimeout, time.Millisecond, time.Hour, false); err != nil {
		return r, err
	}
	if r.limits, err = t.Connections.resolve(path + ".connections"); err != nil {
		return r, err
	}
	if r.handshake, err = t.Handshake.resolve(path + ".handshake"); err != nil {
		return r, err
	}
	if r.handshake.authChecker, err = t.Auth.resolve(path+".auth", map[string]string{"socks": t.SOCKS, "http": t.HTTP}); err != nil {
		return r, err
	}
	if r.health, r.backoff, r.reconnectWait, err = t.Health.resolve(path + ".health"); err != nil {
		return r, err
	}
	if r.maxConns, err = countIn(path+".max_connections", t.MaxConnections, DefaultMaxConnections, maxConns, "unlimited"); err != nil {
		return r, err
	}
	if t.MaxConnectionsPerSource < 0 || t.MaxConnectionsPerSource > maxConns {
		return r, fieldErr(path+".max_connections_per_source", "%d not in [1, %d] (0: unlimited)", t.MaxConnectionsPerSource, maxConns)
	}
	if r.keepalive, err = countIn(path+".keepalive", t.Keepalive, DefaultKeepalive, 65535, "off"); err != nil {
		return r, err
	}
	if r.udp, err = t.UDP.resolve(path + ".udp"); err != nil {
		return r, err
	}
	return r, nil
}

func (u UDPConfig) resolve(path string) (actors.UDPLimits, error) {
	var r actors.UDPLimits
	var err error
	r.Disabled = u.Disable
	if r.Idle, err = durationIn(path+".idle_timeout", u.IdleTimeout, DefaultUDPIdleTimeout, time.Second, 24*time.Hour, false); err != nil {
		return r, err
	}
	if r.MaxAssociations, err = countIn(path+".max_associations", u.MaxAssociations, DefaultMaxAssociations, maxConns, "unlimited"); err != nil {
		return r, err
	}
	return r, nil
}
