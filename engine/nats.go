package engine

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/warren-tunnel/warren/signaling"
)

// DefaultNATSConnectTimeout bounds connecting to NATS (dial, TLS, login) and starting the embedded server.
const DefaultNATSConnectTimeout = 5 * time.Second

// resolvedNATS is a checked NATSConfig: what Start connects with.
type resolvedNATS struct {
	urls     []string
	listen   netip.AddrPort // the embedded server's listener; invalid: none
	timeout  time.Duration
	user     string
	password string
	token    string
	nkeySeed string
	creds    string
	tls      *tls.Config // nil: no TLS asked for
	wait     bool        // wait_on_start: connect in the background
}

// resolve checks the NATS section and loads its files (so an unreadable one is named at once).
func (n *NATSConfig) resolve() (resolvedNATS, error) {
	r := resolvedNATS{urls: n.URLs, user: n.User, password: n.Password, token: n.Token, nkeySeed: n.NKeySeedFile, creds: n.CredentialsFile,
		wait: n.WaitOnStart}
	embedded := len(n.URLs) == 0
	if err := checkNATSURLs(n.URLs); err != nil {
		return r, err
	}
	if n.WaitOnStart && embedded {
		return r, fieldErr("nats.wait_on_start", "needs nats.urls: the embedded server runs in this process, so there is nothing to wait for")
	}
	var err error
	if r.timeout, err = durationIn("nats.connect_timeout", n.ConnectTimeout, DefaultNATSConnectTimeout, minTimeout, maxTimeout, false); err != nil {
		return r, err
	}
	if n.EmbeddedHost != "" {
		return r, fieldErr("nats.embedded_host", "replaced by nats.embedded_listen (IP:port): the embedded server "+
			"no longer listens unless asked; for the old behaviour write embedded_listen: %q", echoValue(n.EmbeddedHost)+":0")
	}

	// Credentials: one way to log in at most.
	if n.Password != "" && n.User == "" {
		return r, fieldErr("nats.password", "set without nats.user")
	}
	if n.User != "" && n.Password == "" {
		return r, fieldErr("nats.password", "required with nats.user")
	}
	var method string
	for _, m := range []struct{ field, value string }{
		{"nats.user", n.User}, {"nats.token", n.Token}, {"nats.nkey_seed_file", n.NKeySeedFile},
		{"nats.credentials_file", n.CredentialsFile},
	} {
		if m.value == "" {
			continue
		}
		if method != "" {
			return r, fieldErr(m.field, "set only one of nats.user (with password), nats.token, nats.nkey_seed_file, nats.credentials_file; %s is set too", method)
		}
		method = m.field
	}
	if n.NKeySeedFile != "" {
		if embedded {
			return r, fieldErr("nats.nkey_seed_file", "needs nats.urls: the embedded server takes user and password or a token")
		}
		if err := checkConfigFile(n.NKeySeedFile); err != nil {
			return r, fieldErr("nats.nkey_seed_file", "%w", err)
		}
		if _, err := nats.NkeyOptionFromSeed(n.NKeySeedFile); err != nil {
			return r, fieldErr("nats.nkey_seed_file", "%w", scrub(err, n.NKeySeedFile))
		}
	}
	if n.CredentialsFile != "" {
		if embedded {
			return r, fieldErr("nats.credentials_file", "needs nats.urls: the embedded server takes user and password or a token")
		}
		if err := checkCredentials(n.CredentialsFile); err != nil {
			return r, fieldErr("nats.credentials_file", "%w", scrub(err, n.CredentialsFile))
		}
	}

	// The embedded server's listener.
	if n.EmbeddedListen != "" {
		if !embedded {
			return r, fieldErr("nats.embedded_listen", "only for the embedded server, which runs when nats.urls is empty")
		}
		ap, err := netip.ParseAddrPort(n.EmbeddedListen)
		if err != nil {
			return r, fieldErr("nats.embedded_listen", "%q: want IP:port (port 0 picks a free one): %w", echoValue(n.EmbeddedListen), scrub(err, n.EmbeddedListen))
		}
		if !ap.Addr().IsLoopback() && n.User == "" && n.Token == "" {
			return r, fieldErr("nats.embedded_listen", "%s is reachable from other hosts: set nats.user and nats.password, "+
				"or nats.token, which the embedded server then requires", ap)
		}
		r.listen = ap
	}

	// TLS.
	t := n.TLS
	if t == (NATSTLSConfig{}) {
		return r, nil
	}
	if embedded {
		return r, fieldErr("nats.tls", "needs nats.urls: the engine reaches its embedded server in-process, and the embedded listener has no TLS")
	}
	r.tls = &tls.Config{MinVersion: tls.VersionTLS12, ServerName: t.ServerName}
	if t.CAFile != "" {
		pem, err := readConfigFile(t.CAFile)
		if err != nil {
			return r, fieldErr("nats.tls.ca_file", "%w", err)
		}
		r.tls.RootCAs = x509.NewCertPool()
		if !r.tls.RootCAs.AppendCertsFromPEM(pem) {
			return r, fieldErr("nats.tls.ca_file", "%s holds no PEM certificate", echoValue(t.CAFile))
		}
	}
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		return r, fieldErr("nats.tls.key_file", "required with nats.tls.cert_file")
	case t.KeyFile != "" && t.CertFile == "":
		return r, fieldErr("nats.tls.cert_file", "required with nats.tls.key_file")
	case t.CertFile != "":
		certPEM, err := readConfigFile(t.CertFile)
		if err != nil {
			return r, fieldErr("nats.tls.cert_file", "%w", err)
		}
		keyPEM, err := readConfigFile(t.KeyFile)
		if err != nil {
			return r, fieldErr("nats.tls.key_file", "%w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return r, fieldErr("nats.tls.cert_file", "with nats.tls.key_file: %w", err)
		}
		r.tls.Certificates = []tls.Certificate{cert}
	}
	return r, nil
}

// checkCredentials reads a .creds file as nats.go will: a user JWT and a user NKey seed.
func checkCredentials(path string) error {
	data, err := readConfigFile(path)
	if err != nil {
		return err
	}
	defer clear(data)
	if _, err := nkeys.ParseDecoratedJWT(data); err != nil {
		return fmt.Errorf("%s: no user JWT: %w", path, err)
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return fmt.Errorf("%s: no user seed: %w", path, err)
	}
	defer kp.Wipe()
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return fmt.Errorf("%s: the seed is not a user's", path)
	}
	return nil
}

// connectHint says which settings to check after a failed connection.
func connectHint(err error) string {
	switch {
	case errors.Is(err, signaling.ErrNATSAuth):
		return " (check nats.user and nats.password, nats.token, nats.nkey_seed_file or nats.credentials_file)"
	case errors.Is(err, nats.ErrTLS), errors.Is(err, nats.ErrSecureConnWanted), errors.Is(err, nats.ErrSecureConnRequired):
		return " (check nats.tls: ca_file must hold the CA that signed the server's certificate, server_name the name it carries)"
	}
	return ""
}
