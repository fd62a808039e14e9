package engine

// Proxy authentication and handshake limits of a tunnel's local proxies (docs/security.md, the
// proxies' section): who may use a proxy, and how long and how many clients may take to say what
// they want.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/warren-tunnel/warren/proxy"
)

// ProxyAuth is who may use a tunnel's proxies: SOCKS5 username/password (RFC 1929) and HTTP
// Proxy-Authorization: Basic. Empty: no authentication, which a proxy listening anywhere but
// loopback refuses unless AllowUnauthenticated says so.
type ProxyAuth struct {
	Users []ProxyUser `yaml:"users"`
	// UsersFile holds one "user:password" or "user:<bcrypt hash>" per line ('#' starts a comment);
	// read when the configuration is checked and when the tunnel opens.
	UsersFile string `yaml:"users_file"`
	// AllowUnauthenticated lets a proxy without users listen on an address other than loopback
	// (anyone who reaches it can use the tunnel).
	AllowUnauthenticated bool `yaml:"allow_unauthenticated"`
	// Check, for embedders, decides instead of Users and UsersFile. It is called from the
	// connections' goroutines, concurrently, and must not block for long.
	Check func(user, password string) bool `yaml:"-"`
}

// ProxyUser is one user of a proxy: Password, or PasswordHash (bcrypt, as `htpasswd -B` or
// Python's bcrypt make), not both.
type ProxyUser struct {
	User         string `yaml:"user"`
	Password     string `yaml:"password"`
	PasswordHash string `yaml:"password_hash"`
}

// HandshakeLimits bound what a proxy client may take before it has said where it goes.
type HandshakeLimits struct {
	// Timeout for the SOCKS5 greeting, authentication and request, or the HTTP request head.
	// Default 5s; range 100ms–5m.
	Timeout Duration `yaml:"timeout"`
	// MaxPending bounds connections still in their handshake, apart from established ones
	// (max_connections): a full set evicts its oldest to admit a new one. Default 256; range 1–65536.
	MaxPending int `yaml:"max_pending"`
	// MaxHeaderBytes caps an HTTP request head (431 beyond it). Default 64 KiB; range 1 KiB–1 MiB.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
}

// Defaults of the proxies' handshake limits.
const (
	DefaultProxyHandshakeTimeout = proxy.DefaultHandshakeTimeout
	DefaultMaxPendingHandshakes  = 256
	DefaultMaxHeaderBytes        = proxy.MaxHeaderBytes
)

type resolvedHandshake struct {
	timeout     time.Duration
	maxPending  int
	maxHeader   int
	authChecker *credentials // nil: no authentication
}

func (h HandshakeLimits) resolve(path string) (r resolvedHandshake, err error) {
	if r.timeout, err = durationIn(path+".timeout", h.Timeout, DefaultProxyHandshakeTimeout, minTimeout, maxTimeout, false); err != nil {
		return r, err
	}
	if r.maxPending, err = countIn(path+".max_pending", h.MaxPending, DefaultMaxPendingHandshakes, 65536, ""); err != nil {
		return r, err
	}
	switch {
	case h.MaxHeaderBytes == 0:
		r.maxHeader = DefaultMaxHeaderBytes
	case h.MaxHeaderBytes < 1<<10 || h.MaxHeaderBytes > 1<<20:
		return r, fieldErr(path+".max_header_bytes", "%d not in [1024, 1048576] (0: default %d)", h.MaxHeaderBytes, DefaultMaxHeaderBytes)
	default:
		r.maxHeader = h.MaxHeaderBytes
	}
	return r, nil
}

// options are the proxies' protocol options: authentication (none when no users) and limits.
func (r resolvedHandshake) options() proxy.Options {
	o := proxy.Options{HandshakeTimeout: r.timeout, MaxHeaderBytes: r.maxHeader}
	if r.authChecker != nil { // never a typed nil in the interface
		o.Auth = r.authChecker
	}
	return o
}

// resolve checks the users and loads the file; it returns nil when the proxy has no authentication.
func (a ProxyAuth) resolve(path string, listens map[string]string) (*credentials, error) {
	users := map[string]credential{}
	add := func(field, user, password, hash string) error {
		switch {
		case user == "" || len(user) > 255 || strings.ContainsAny(user, ":\r\n"):
			return fieldErr(field, "user names are 1-255 bytes without ':' or line breaks")
		case len(password) > 255:
			return fieldErr(field, "a password is at most 255 bytes (SOCKS5 carries no more)")
		case (password == "") == (hash == ""):
			return fieldErr(field, "user %q: give a password or a password_hash (bcrypt), one of them", echoValue(user))
		}
		if _, dup := users[user]; dup {
			return fieldErr(field, "user %q listed twice", echoValue(user))
		}
		c := credential{}
		if hash != "" {
			if _, err := bcrypt.Cost([]byte(hash)); err != nil {
				return fieldErr(field, "user %q: password_hash is not a bcrypt hash: %v", echoValue(user), err)
			}
			c.hash = []byte(hash)
		} else {
			c.sum = sha256.Sum256([]byte(password))
		}
		users[user] = c
		return nil
	}
	for i, u := range a.Users {
		if err := add(fmt.Sprintf("%s.users[%d]", path, i), u.User, u.Password, u.PasswordHash); err != nil {
			return nil, err
		}
	}
	if a.UsersFile != "" {
		data, err := readConfigFile(a.UsersFile) // a regular file of at most 1 MiB
		if err != nil {
			return nil, fieldErr(path+".users_file", "%v", err)
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			user, secret, ok := strings.Cut(line, ":")
			if !ok {
				return nil, fieldErr(path+".users_file", "line %d: want user:password or user:<bcrypt hash>", n)
			}
			password, hash := secret, ""
			if strings.HasPrefix(secret, "$2a$") || strings.HasPrefix(secret, "$2b$") || strings.HasPrefix(secret, "$2y$") {
				password, hash = "", secret
			}
			if err := add(fmt.Sprintf("%s.users_file line %d", path, n), user, password, hash); err != nil {
				return nil, err
			}
		}
	}
	if len(users) == 0 && a.Check == nil {
		if !a.AllowUnauthenticated {
			for field, addr := range listens {
				if addr != "" && !loopbackListen(addr) {
					return nil, fieldErr(path, "the proxy on %s (%s) is reachable from other hosts: give it users, or set allow_unauthenticated", addr, field)
				}
			}
		}
		return nil, nil
	}
	c := &credentials{users: users, check: a.Check, verified: map[string][sha256.Size]byte{}}
	for _, u := range users {
		if u.hash != nil { // unknown users then cost a bcrypt check of the same cost, too
			cost, _ := bcrypt.Cost(u.hash)
			c.decoy = decoyHash(cost)
			break
		}
	}
	return c, nil
}

// loopbackListen reports whether a listen address only takes connections from this host.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

type credential struct {
	sum  [sha256.Size]byte // of the password, when given in the clear
	hash []byte            // bcrypt, otherwise
}

// credentials check proxy clients' user names and passwords. Comparisons take the same time
// whether or not the user exists; a bcrypt hash is checked once per password and the result
// kept (as a digest), so a busy proxy does not pay bcrypt's cost per connection.
type credentials struct {
	users map[string]credential
	check func(user, password string) bool
	decoy []byte     // a bcrypt hash checked for unknown users when any user has a hash
	mu    sync.Mutex // guards verified (a cache, not lifecycle state)
	// verified: user → digest of a password that matched its bcrypt hash
	verified map[string][sha256.Size]byte
}

// bcryptWait bounds the wait for a bcrypt slot.
const bcryptWait = 2 * time.Second

// bcryptSlots bounds bcrypt checks at once across the process, all tunnels together (each check
// costs tens of ms of CPU): a stream of wrong passwords cannot take every core. A check that
// cannot start within bcryptWait fails.
var bcryptSlots = make(chan struct{}, max(1, runtime.GOMAXPROCS(0)/2))

// decoys caches one decoy hash per bcrypt cost (making one costs a bcrypt run).
var decoys = struct {
	sync.Mutex
	byCost map[int][]byte
}{byCost: map[int][]byte{}}

func decoyHash(cost int) []byte {
	decoys.Lock()
	defer decoys.Unlock()
	if h, ok := decoys.byCost[cost]; ok {
		return h
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("warren: no such user"), cost)
	decoys.byCost[cost] = h
	return h
}

// bcryptCompare checks password against hash in one of the bounded slots.
func (c *credentials) bcryptCompare(hash []byte, password string) bool {
	t := time.NewTimer(bcryptWait)
	defer t.Stop()
	select {
	case bcryptSlots <- struct{}{}:
	case <-t.C:
		return false
	}
	defer func() { <-bcryptSlots }()
	return bcrypt.CompareHashAndPassword(hash, []byte(password)) == nil
}

// noSuchUser is compared against for unknown users, so that their answer takes as long as a known
// user's with a password in the clear.
var noSuchUser = sha256.Sum256([]byte("warren: no such user"))

// Authenticate implements proxy.Authenticator.
func (c *credentials) Authenticate(user, password string) bool {
	if c.check != nil {
		return c.check(user, password)
	}
	sum := sha256.Sum256([]byte(password))
	cred, known := c.users[user]
	switch {
	case !known:
		subtle.ConstantTimeCompare(sum[:], noSuchUser[:])
		if c.decoy != nil {
			c.bcryptCompare(c.decoy, password)
		}
		return false
	case cred.hash == nil:
		return subtle.ConstantTimeCompare(sum[:], cred.sum[:]) == 1
	}
	c.mu.Lock()
	v, ok := c.verified[user]
	c.mu.Unlock()
	if ok && subtle.ConstantTimeCompare(sum[:], v[:]) == 1 {
		return true
	}
	if !c.bcryptCompare(cred.hash, password) {
		return false
	}
	c.mu.Lock()
	c.verified[user] = sum
	c.mu.Unlock()
	return true
}
