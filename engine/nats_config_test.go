package engine

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nkeys"
)

// natsFiles writes the files a nats: section may name into a temporary directory.
type natsFiles struct {
	ca, cert, key, otherKey, seed, accountSeed, creds, garbage, missing string
}

func writeNATSFiles(t *testing.T) natsFiles {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pemOf := func(kind string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}) }
	newKey := func() (*ecdsa.PrivateKey, []byte) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return k, pemOf("PRIVATE KEY", der)
	}
	caKey, _ := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, keyPEM := newKey()
	_, otherKeyPEM := newKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "client"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	user, _ := nkeys.CreateUser()
	seed, _ := user.Seed()
	account, _ := nkeys.CreateAccount()
	accountSeed, _ := account.Seed()
	// nats.go takes the JWT as it stands (the server checks it); the seed must be a user's.
	creds := "-----BEGIN NATS USER JWT-----\neyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5LW5rZXkifQ.e30.c2ln\n------END NATS USER JWT------\n\n" +
		"-----BEGIN USER NKEY SEED-----\n" + string(seed) + "\n------END USER NKEY SEED------\n"
	return natsFiles{
		ca: write("ca.pem", pemOf("CERTIFICATE", caDER)), cert: write("client.pem", pemOf("CERTIFICATE", der)),
		key: write("client-key.pem", keyPEM), otherKey: write("other-key.pem", otherKeyPEM),
		seed: write("user.nk", seed), accountSeed: write("account.nk", accountSeed), creds: write("user.creds", []byte(creds)),
		garbage: write("garbage", []byte("not what you think")), missing: filepath.Join(dir, "missing"),
	}
}

func TestNATSConfigNamesTheField(t *testing.T) {
	f := writeNATSFiles(t)
	remote := func() NATSConfig { return NATSConfig{URLs: []string{"tls://nats.example.net:4222"}} }
	good := []struct {
		name string
		n    NATSConfig
	}{
		{"embedded, no listener", NATSConfig{}},
		{"embedded on loopback", NATSConfig{EmbeddedListen: "127.0.0.1:0"}},
		{"embedded on IPv6 loopback", NATSConfig{EmbeddedListen: "[::1]:4222"}},
		{"embedded everywhere with a user", NATSConfig{EmbeddedListen: "0.0.0.0:4222", User: "u", Password: "p"}},
		{"embedded everywhere with a token", NATSConfig{EmbeddedListen: "0.0.0.0:0", Token: "t"}},
		{"user and TLS", func() NATSConfig {
			n := remote()
			n.User, n.Password = "u", "p"
			n.TLS = NATSTLSConfig{CAFile: f.ca, CertFile: f.cert, KeyFile: f.key, ServerName: "nats.example.net"}
			return n
		}()},
		{"server name alone", func() NATSConfig { n := remote(); n.TLS.ServerName = "x"; return n }()},
		{"nkey seed", func() NATSConfig { n := remote(); n.NKeySeedFile = f.seed; return n }()},
		{"credentials", func() NATSConfig { n := remote(); n.CredentialsFile = f.creds; return n }()},
		{"wait on start", func() NATSConfig { n := remote(); n.WaitOnStart = true; return n }()},
	}
	for _, tc := range good {
		c := Config{NATS: tc.n}
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
	}

	bad := []struct {
		field string
		n     func(*NATSConfig)
	}{
		{"nats.urls[1]", func(n *NATSConfig) { n.URLs = append(n.URLs, "") }},
		{"nats.embedded_host", func(n *NATSConfig) { n.URLs, n.EmbeddedHost = nil, "127.0.0.1" }},
		{"nats.password", func(n *NATSConfig) { n.Password = "p" }},
		{"nats.password", func(n *NATSConfig) { n.User = "u" }},
		{"nats.token", func(n *NATSConfig) { n.User, n.Password, n.Token = "u", "p", "t" }},
		{"nats.nkey_seed_file", func(n *NATSConfig) { n.Token, n.NKeySeedFile = "t", f.seed }},
		{"nats.credentials_file", func(n *NATSConfig) { n.NKeySeedFile, n.CredentialsFile = f.seed, f.creds }},
		{"nats.nkey_seed_file", func(n *NATSConfig) { n.NKeySeedFile = f.missing }},
		{"nats.nkey_seed_file", func(n *NATSConfig) { n.NKeySeedFile = f.garbage }},
		{"nats.nkey_seed_file", func(n *NATSConfig) { n.NKeySeedFile = f.accountSeed }},
		{"nats.nkey_seed_file", func(n *NATSConfig) { n.URLs, n.NKeySeedFile = nil, f.seed }},
		{"nats.credentials_file", func(n *NATSConfig) { n.CredentialsFile = f.missing }},
		{"nats.credentials_file", func(n *NATSConfig) { n.CredentialsFile = f.garbage }},
		{"nats.credentials_file", func(n *NATSConfig) { n.URLs, n.CredentialsFile = nil, f.creds }},
		{"nats.tls.key_file", func(n *NATSConfig) { n.TLS.CertFile = f.cert }},
		{"nats.tls.cert_file", func(n *NATSConfig) { n.TLS.KeyFile = f.key }},
		{"nats.tls.ca_file", func(n *NATSConfig) { n.TLS.CAFile = f.missing }},
		{"nats.tls.ca_file", func(n *NATSConfig) { n.TLS.CAFile = f.garbage }},
		{"nats.tls.cert_file", func(n *NATSConfig) { n.TLS.CertFile, n.TLS.KeyFile = f.missing, f.key }},
		{"nats.tls.key_file", func(n *NATSConfig) { n.TLS.CertFile, n.TLS.KeyFile = f.cert, f.missing }},
		{"nats.tls.cert_file", func(n *NATSConfig) { n.TLS.CertFile, n.TLS.KeyFile = f.cert, f.otherKey }},
		{"nats.tls", func(n *NATSConfig) { n.URLs, n.TLS.CAFile = nil, f.ca }},
		{"nats.embedded_listen", func(n *NATSConfig) { n.EmbeddedListen = "127.0.0.1:0" }},
		{"nats.embedded_listen", func(n *NATSConfig) { n.URLs, n.EmbeddedListen = nil, "localhost:4222" }},
		{"nats.embedded_listen", func(n *NATSConfig) { n.URLs, n.EmbeddedListen = nil, "127.0.0.1" }},
		{"nats.embedded_listen", func(n *NATSConfig) { n.URLs, n.EmbeddedListen = nil, "0.0.0.0:0" }},
		{"nats.embedded_listen", func(n *NATSConfig) { n.URLs, n.EmbeddedListen = nil, "[::]:4222" }},
		{"nats.embedded_listen", func(n *NATSConfig) { n.URLs, n.EmbeddedListen = nil, "192.0.2.10:4222" }},
		{"nats.wait_on_start", func(n *NATSConfig) { n.URLs, n.WaitOnStart = nil, true }},
	}
	for i, tc := range bad {
		n := remote()
		tc.n(&n)
		c := Config{NATS: n}
		err := c.Validate()
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != tc.field || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("case %d: got %v, want a FieldError for %s", i, err, tc.field)
			continue
		}
		if !strings.Contains(err.Error(), tc.field+":") {
			t.Errorf("case %d: message %q does not name the field", i, err)
		}
	}
}

// TestEmbeddedHostIsReplaced: an old config's embedded_host fails and says what to write instead.
func TestEmbeddedHostIsReplaced(t *testing.T) {
	c := Config{NATS: NATSConfig{EmbeddedHost: "0.0.0.0"}}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `embedded_listen: "0.0.0.0:0"`) {
		t.Fatalf("embedded_host: %v", err)
	}
}
