package engine

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestProxyAuthConfig(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(file, []byte("# proxy users\ncarol:plain-pass\ndave:"+string(hash)+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	loop := map[string]string{"socks": "127.0.0.1:1080"}
	creds, err := ProxyAuth{Users: []ProxyUser{{User: "alice", Password: "wonder"}, {User: "bob", PasswordHash: string(hash)}},
		UsersFile: file}.resolve("tunnels[0].auth", loop)
	if err != nil || creds == nil {
		t.Fatalf("resolve: %v", err)
	}
	for _, c := range []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "wonder", true}, {"alice", "wonder2", false}, {"alice", "", false},
		{"bob", "s3cret", true}, {"bob", "s3cret", true}, {"bob", "wrong", false}, // second: from the verified cache
		{"carol", "plain-pass", true}, {"dave", "s3cret", true}, {"dave", "plain-pass", false},
		{"mallory", "wonder", false}, {"", "", false},
	} {
		if got := creds.Authenticate(c.user, c.pass); got != c.ok {
			t.Errorf("Authenticate(%q, %q) = %v, want %v", c.user, c.pass, got, c.ok)
		}
	}
	// No users: loopback is fine, anything else needs allow_unauthenticated.
	if c, err := (ProxyAuth{}).resolve("tunnels[0].auth", loop); c != nil || err != nil {
		t.Fatalf("no users on loopback: %v, %v", c, err)
	}
	if _, err := (ProxyAuth{AllowUnauthenticated: true}).resolve("a", map[string]string{"http": "0.0.0.0:8080"}); err != nil {
		t.Fatalf("allowed: %v", err)
	}
	for name, c := range map[string]struct {
		auth    ProxyAuth
		listens map[string]string
		field   string
	}{
		"open on every interface": {ProxyAuth{}, map[string]string{"http": "0.0.0.0:8080"}, "tunnels[0].auth"},
		"open on a LAN address":   {ProxyAuth{}, map[string]string{"socks": "192.168.1.5:1080"}, "tunnels[0].auth"},
		"neither password":        {ProxyAuth{Users: []ProxyUser{{User: "a"}}}, loop, "tunnels[0].auth.users[0]"},
		"both passwords":          {ProxyAuth{Users: []ProxyUser{{User: "a", Password: "x", PasswordHash: string(hash)}}}, loop, "tunnels[0].auth.users[0]"},
		"not bcrypt":              {ProxyAuth{Users: []ProxyUser{{User: "a", PasswordHash: "md5:abc"}}}, loop, "tunnels[0].auth.users[0]"},
		"colon in user":           {ProxyAuth{Users: []ProxyUser{{User: "a:b", Password: "x"}}}, loop, "tunnels[0].auth.users[0]"},
		"twice":                   {ProxyAuth{Users: []ProxyUser{{User: "a", Password: "x"}, {User: "a", Password: "y"}}}, loop, "tunnels[0].auth.users[1]"},
		"missing file":            {ProxyAuth{UsersFile: "/nonexistent/users"}, loop, "tunnels[0].auth.users_file"},
	} {
		_, err := c.auth.resolve("tunnels[0].auth", c.listens)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: %v, want an error naming %s", name, err, c.field)
		}
	}
}
