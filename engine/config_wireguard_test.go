package engine

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/signaling"
	"github.com/warren-tunnel/warren/wgquick"
)

// wgKeys are a WireGuard exit's keys: the client's private key, the server's public key and a
// preshared key, base64 (fresh for every test).
type wgKeys struct{ priv, pub, psk string }

func newWGKeys(t *testing.T) wgKeys {
	t.Helper()
	priv, _ := testutil.KeyPair(t)
	_, pub := testutil.KeyPair(t)
	psk, _ := testutil.KeyPair(t)
	b64 := base64.StdEncoding.EncodeToString
	return wgKeys{priv: b64(priv[:]), pub: b64(pub[:]), psk: b64(psk[:])}
}

// secrets are the forms a secret key could show in: base64 and hex.
func (k wgKeys) secrets() []string {
	var out []string
	for _, s := range []string{k.priv, k.psk} {
		raw, _ := base64.StdEncoding.DecodeString(s)
		out = append(out, s, strings.TrimRight(s, "="), hex.EncodeToString(raw))
	}
	return out
}

// wgFull is a full WireGuard exit (every field set) as a wg-quick file, line by line as the error
// cases below count them.
func (k wgKeys) wgFull() string {
	return "# client of vpn.example.net\n" + //              1
		"[Interface]\n" + //                                  2
		"PrivateKey = " + k.priv + "\n" + //                  3
		"Address = 10.64.0.2/32, fd00::2/128\n" + //          4
		"DNS = 10.64.0.1, fd00::1\n" + //                     5
		"MTU = 1380\n" + //                                   6
		"\n" + //                                             7
		"[Peer]\n" + //                                       8
		"PublicKey = " + k.pub + "\n" + //                    9
		"PresharedKey = " + k.psk + "\n" + //                10
		"Endpoint = vpn.example.net:51820\n" + //            11
		"AllowedIPs = 0.0.0.0/0, ::/0\n" + //                12
		"PersistentKeepalive = 15\n" //                      13
}

// wgMinimal is the least a WireGuard exit needs, as a wg-quick file (keys written in lower case,
// as wg-quick accepts them).
func (k wgKeys) wgMinimal() string {
	return "[interface]\nprivatekey = " + k.priv + "\naddress = 10.64.0.2\n[peer]\npublickey = " + k.pub +
		"\nendpoint = [fd00::1]:51820\nallowedips = 10.64.0.0/16\n"
}

// inlineFull is wgFull as inline fields.
func (k wgKeys) inlineFull(name string) WireGuardExitSpec {
	return WireGuardExitSpec{Name: name,
		Interface: WireGuardInterface{PrivateKey: k.priv, Address: []string{"10.64.0.2/32", "fd00::2/128"},
			DNS: []string{"10.64.0.1", "fd00::1"}, MTU: 1380},
		Peer: WireGuardPeer{PublicKey: k.pub, PresharedKey: k.psk, Endpoint: "vpn.example.net:51820",
			AllowedIPs: []string{"0.0.0.0/0", "::/0"}, PersistentKeepalive: 15}}
}

func (k wgKeys) inlineMinimal(name string) WireGuardExitSpec {
	return WireGuardExitSpec{Name: name, Interface: WireGuardInterface{PrivateKey: k.priv, Address: []string{"10.64.0.2"}},
		Peer: WireGuardPeer{PublicKey: k.pub, Endpoint: "[fd00::1]:51820", AllowedIPs: []string{"10.64.0.0/16"}}}
}

func mustKey(t *testing.T, s string) signaling.Key {
	t.Helper()
	k, err := signaling.ParseKey(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// writeWG writes text to a file name in dir and returns its path.
func writeWG(t *testing.T, dir, name, text string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestWireGuardExitFileAndInline: a WireGuard exit written as a wg-quick file and the same written
// inline resolve to the same actors.WireGuardExit, through Validate and through New (whose
// WireGuardExits has exactly these): keys, addresses, DNS, MTU (1420 when unset), preshared key,
// endpoint, AllowedIPs, keepalive, check. A tunnel may name them as its exit and failover exits.
func TestWireGuardExitFileAndInline(t *testing.T) {
	k := newWGKeys(t)
	psk := mustKey(t, k.psk)
	full := func(id string) *actors.WireGuardExit {
		return &actors.WireGuardExit{ID: id, PrivateKey: mustKey(t, k.priv),
			Addresses: []netip.Addr{netip.MustParseAddr("10.64.0.2"), netip.MustParseAddr("fd00::2")},
			DNS:       []netip.Addr{netip.MustParseAddr("10.64.0.1"), netip.MustParseAddr("fd00::1")}, MTU: 1380,
			PublicKey: mustKey(t, k.pub), PresharedKey: &psk, Endpoint: "vpn.example.net:51820",
			AllowedIPs: []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}, Keepalive: 15}
	}
	minimal := func(id string) *actors.WireGuardExit {
		return &actors.WireGuardExit{ID: id, PrivateKey: mustKey(t, k.priv), Addresses: []netip.Addr{netip.MustParseAddr("10.64.0.2")},
			MTU: 1420, PublicKey: mustKey(t, k.pub), Endpoint: "[fd00::1]:51820", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.64.0.0/16")}}
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name   string
		file   string
		inline WireGuardExitSpec
		check  WireGuardCheck
		want   func(id string) *actors.WireGuardExit
		wantCk actors.WireGuardCheck
	}{
		{"full, tcp check", k.wgFull(), k.inlineFull(""), WireGuardCheck{TCP: "10.64.0.1:80"}, full, actors.WireGuardCheck{TCP: "10.64.0.1:80"}},
		{"minimal, http check", k.wgMinimal(), k.inlineMinimal(""), WireGuardCheck{HTTP: "http://10.64.0.1/health"}, minimal,
			actors.WireGuardCheck{HTTP: "http://10.64.0.1/health"}},
		{"minimal, name check", k.wgMinimal(), k.inlineMinimal(""), WireGuardCheck{TCP: "origin.test:443"}, minimal,
			actors.WireGuardCheck{TCP: "origin.test:443"}},
		{"no check", k.wgFull(), k.inlineFull(""), WireGuardCheck{}, full, actors.WireGuardCheck{}},
	} {
		inline := tc.inline
		inline.Name, inline.Check = "by-hand", tc.check
		cfg := Config{
			WireGuardExits: []WireGuardExitSpec{{Name: "from-file", File: writeWG(t, dir, "wg0.conf", tc.file), Check: tc.check}, inline},
			Tunnels:        []TunnelSpec{{Exit: "wg:from-file", Exits: []string{"wg:by-hand"}, SOCKS: "127.0.0.1:0"}},
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		e, err := New(cfg)
		if err != nil {
			t.Fatalf("%s: New: %v", tc.name, err)
		}
		got := e.WireGuardExits()
		if len(got) != 2 {
			t.Fatalf("%s: %d WireGuard exits, want 2: %v", tc.name, len(got), got)
		}
		for _, id := range []string{"wg:from-file", "wg:by-hand"} {
			want := tc.want(id)
			want.Check = tc.wantCk
			if !reflect.DeepEqual(got[id], want) {
				t.Errorf("%s: %s is\n%#v\nwant\n%#v", tc.name, id, *got[id], *want)
			}
		}
		file, byHand := *got["wg:from-file"], *got["wg:by-hand"]
		file.ID = byHand.ID
		if !reflect.DeepEqual(file, byHand) {
			t.Errorf("%s: the file and inline forms differ", tc.name)
		}
	}
}

// TestSetWireGuardExits: the engine's WireGuard exits are replaced whole; the map handed out
// before is not modified; a bad set is refused naming its field under wireguard_exits and changes
// nothing.
func TestSetWireGuardExits(t *testing.T) {
	k := newWGKeys(t)
	e, err := New(Config{WireGuardExits: []WireGuardExitSpec{k.inlineMinimal("a")}})
	if err != nil {
		t.Fatal(err)
	}
	before := e.WireGuardExits()
	if err := e.SetWireGuardExits([]WireGuardExitSpec{k.inlineMinimal("b"), k.inlineFull("c")}); err != nil {
		t.Fatal(err)
	}
	after := e.WireGuardExits()
	if len(before) != 1 || before["wg:a"] == nil || len(after) != 2 || after["wg:b"] == nil || after["wg:c"].MTU != 1380 {
		t.Fatalf("before %v, after %v", before, after)
	}
	bad := k.inlineFull("d")
	bad.Peer.PresharedKey = k.psk[:43]
	err = e.SetWireGuardExits([]WireGuardExitSpec{k.inlineMinimal("b"), bad})
	wantField(t, "bad set", err, "wireguard_exits[1].peer.preshared_key")
	if !reflect.DeepEqual(e.WireGuardExits(), after) {
		t.Errorf("a refused set changed the exits: %v", e.WireGuardExits())
	}
	if err := e.SetWireGuardExits(nil); err != nil || len(e.WireGuardExits()) != 0 {
		t.Errorf("no WireGuard exits: %v, %v", e.WireGuardExits(), err)
	}
}

// TestWireGuardExitErrors: every error in a WireGuard exit's configuration is a FieldError naming
// the field exactly (a list item by its index; a file by its field, with file:line: key inside as
// wgquick.Error), wraps ErrWireGuardConfig (and the cause's sentinel), is the same from New, and
// never shows a private or preshared key — neither the configured ones nor a bad one.
func TestWireGuardExitErrors(t *testing.T) {
	k := newWGKeys(t)
	dir := t.TempDir()
	short := base64.StdEncoding.EncodeToString([]byte("thirty-one bytes of a secret k!")) // 44 characters, 31 bytes
	notB64 := strings.Repeat("!", 43) + "="
	secretish := []string{short, strings.TrimRight(short, "="), notB64[:20]}
	type mut = func(c *Config)
	ex := func(f func(*WireGuardExitSpec)) mut { return func(c *Config) { f(&c.WireGuardExits[0]) } }
	file := func(name, text string) mut {
		return func(c *Config) { c.WireGuardExits[0] = WireGuardExitSpec{Name: "a", File: writeWG(t, dir, name, text)} }
	}
	full := k.wgFull()
	line := func(n int) string { return strings.Split(full, "\n")[n-1] + "\n" }
	replace := func(n int, with string) string { return strings.Replace(full, line(n), with, 1) }
	path := func(name string) string { return filepath.Join(dir, name) }
	cases := []struct {
		name  string
		mut   mut
		field string
		also  []string
		is    error
	}{
		// Inline, field by field.
		{"empty name", ex(func(s *WireGuardExitSpec) { s.Name = "" }), "wireguard_exits[0].name", nil, signaling.ErrInvalid},
		{"bad name", ex(func(s *WireGuardExitSpec) { s.Name = "wg:a" }), "wireguard_exits[0].name", nil, signaling.ErrInvalid},
		{"name twice", func(c *Config) { c.WireGuardExits = append(c.WireGuardExits, k.inlineMinimal("a")) }, "wireguard_exits[1].name", []string{`"a" used twice`}, nil},
		{"neither file nor inline", ex(func(s *WireGuardExitSpec) { *s = WireGuardExitSpec{Name: "a", Check: WireGuardCheck{TCP: "x:1"}} }), "wireguard_exits[0]", nil, nil},
		{"file and inline", ex(func(s *WireGuardExitSpec) { s.File = path("none.conf") }), "wireguard_exits[0].file", []string{"not both"}, nil},
		{"public key 31 bytes", ex(func(s *WireGuardExitSpec) { s.Peer.PublicKey = short }), "wireguard_exits[0].peer.public_key", nil, wgquick.ErrBadKey},
		{"public key not base64", ex(func(s *WireGuardExitSpec) { s.Peer.PublicKey = notB64 }), "wireguard_exits[0].peer.public_key", nil, wgquick.ErrBadKey},
		{"public key is the private key", ex(func(s *WireGuardExitSpec) { s.Peer.PublicKey = k.priv }), "wireguard_exits[0].peer.public_key", nil, wgquick.ErrBadKey},
		{"private key 31 bytes", ex(func(s *WireGuardExitSpec) { s.Interface.PrivateKey = short }), "wireguard_exits[0].interface.private_key", nil, wgquick.ErrBadKey},
		{"private key not base64", ex(func(s *WireGuardExitSpec) { s.Interface.PrivateKey = notB64 }), "wireguard_exits[0].interface.private_key", nil, wgquick.ErrBadKey},
		{"private key unpadded", ex(func(s *WireGuardExitSpec) { s.Interface.PrivateKey = strings.TrimRight(k.priv, "=") }), "wireguard_exits[0].interface.private_key", nil, wgquick.ErrBadKey},
		{"private key with a line break", ex(func(s *WireGuardExitSpec) { s.Interface.PrivateKey = k.priv[:20] + "\n" + k.priv[20:] }), "wireguard_exits[0].interface.private_key", nil, nil},
		{"private key with a comment", ex(func(s *WireGuardExitSpec) { s.Interface.PrivateKey = k.priv + " # mine" }), "wireguard_exits[0].interface.private_key", nil, nil},
		{"preshared key 31 bytes", ex(func(s *WireGuardExitSpec) { s.Peer.PresharedKey = short }), "wireguard_exits[0].peer.preshared_key", nil, wgquick.ErrBadKey},
		{"preshared key not base64", ex(func(s *WireGuardExitSpec) { s.Peer.PresharedKey = notB64 }), "wireguard_exits[0].peer.preshared_key", nil, wgquick.ErrBadKey},
		{"missing private key", ex(func(s *WireGuardExitSpec) { s.Interface.PrivateKey = "" }), "wireguard_exits[0].interface.private_key", nil, wgquick.ErrMissing},
		{"missing address", ex(func(s *WireGuardExitSpec) { s.Interface.Address = nil }), "wireguard_exits[0].interface.address", nil, wgquick.ErrMissing},
		{"missing public key", ex(func(s *WireGuardExitSpec) { s.Peer.PublicKey = "" }), "wireguard_exits[0].peer.public_key", nil, wgquick.ErrMissing},
		{"missing endpoint", ex(func(s *WireGuardExitSpec) { s.Peer.Endpoint = "" }), "wireguard_exits[0].peer.endpoint", []string{"no Endpoint"}, nil},
		{"missing allowed_ips", ex(func(s *WireGuardExitSpec) { s.Peer.AllowedIPs = nil }), "wireguard_exits[0].peer.allowed_ips", []string{"no AllowedIPs"}, nil},
		{"bad address", ex(func(s *WireGuardExitSpec) { s.Interface.Address[1] = "fd00::2/129" }), "wireguard_exits[0].interface.address[1]", []string{"fd00::2/129"}, wgquick.ErrBadValue},
		{"two addresses in one item", ex(func(s *WireGuardExitSpec) { s.Interface.Address[0] = "10.64.0.2/32, 10.64.0.3/32" }), "wireguard_exits[0].interface.address[0]", []string{"one value per list item"}, nil},
		{"two addresses spaced", ex(func(s *WireGuardExitSpec) { s.Interface.Address[0] = "10.64.0.2/32 10.64.0.3/32" }), "wireguard_exits[0].interface.address[0]", []string{"one value per list item"}, nil},
		{"bad dns", ex(func(s *WireGuardExitSpec) { s.Interface.DNS[1] = "resolver!" }), "wireguard_exits[0].interface.dns[1]", nil, wgquick.ErrBadValue},
		{"mtu", ex(func(s *WireGuardExitSpec) { s.Interface.MTU = 100 }), "wireguard_exits[0].interface.mtu", []string{"1280..9000"}, wgquick.ErrBadValue},
		{"endpoint without port", ex(func(s *WireGuardExitSpec) { s.Peer.Endpoint = "vpn.example.net" }), "wireguard_exits[0].peer.endpoint", nil, wgquick.ErrBadValue},
		{"bad allowed_ips", ex(func(s *WireGuardExitSpec) { s.Peer.AllowedIPs[0] = "10.0.0.0/33" }), "wireguard_exits[0].peer.allowed_ips[0]", nil, wgquick.ErrBadValue},
		{"keepalive", ex(func(s *WireGuardExitSpec) { s.Peer.PersistentKeepalive = 70000 }), "wireguard_exits[0].peer.persistent_keepalive", nil, wgquick.ErrBadValue},
		{"check tcp and http", ex(func(s *WireGuardExitSpec) { s.Check = WireGuardCheck{TCP: "10.64.0.1:80", HTTP: "http://10.64.0.1/"} }), "wireguard_exits[0].check", []string{"not both"}, nil},
		{"check tcp without port", ex(func(s *WireGuardExitSpec) { s.Check.TCP = "10.64.0.1" }), "wireguard_exits[0].check.tcp", []string{"host:port"}, nil},
		{"check tcp port 0", ex(func(s *WireGuardExitSpec) { s.Check.TCP = "origin.test:0" }), "wireguard_exits[0].check.tcp", []string{"1-65535"}, nil},
		{"check tcp ipv6 unbracketed", ex(func(s *WireGuardExitSpec) { s.Check.TCP = "fd00::1:80" }), "wireguard_exits[0].check.tcp", nil, nil},
		{"check http scheme", ex(func(s *WireGuardExitSpec) { s.Check.HTTP = "ftp://10.64.0.1/" }), "wireguard_exits[0].check.http", []string{"want http or https"}, nil},
		{"check http no host", ex(func(s *WireGuardExitSpec) { s.Check.HTTP = "http:///health" }), "wireguard_exits[0].check.http", []string{"no host"}, nil},
		{"check http unparsable", ex(func(s *WireGuardExitSpec) { s.Check.HTTP = "http://[::1/" }), "wireguard_exits[0].check.http", nil, nil},
		// Files: the field is file, the message file:line: key.
		{"file missing", ex(func(s *WireGuardExitSpec) { *s = WireGuardExitSpec{Name: "a", File: path("gone.conf")} }), "wireguard_exits[0].file", nil, fs.ErrNotExist},
		{"file unknown section", file("section.conf", full+"[Route]\n"), "wireguard_exits[0].file", []string{path("section.conf") + ":14:"}, wgquick.ErrUnknownSection},
		{"file unknown key", file("key.conf", full+"Weight = 1\n"), "wireguard_exits[0].file", []string{path("key.conf") + ":14: Weight:"}, wgquick.ErrUnknownKey},
		{"file hook", file("hook.conf", replace(6, "MTU = 1380\nPostUp = iptables -A FORWARD\n")), "wireguard_exits[0].file", []string{path("hook.conf") + ":7: PostUp:"}, wgquick.ErrUnsupportedKey},
		{"file private key 31 bytes", file("priv.conf", replace(3, "PrivateKey = "+short+"\n")), "wireguard_exits[0].file", []string{path("priv.conf") + ":3: PrivateKey:"}, wgquick.ErrBadKey},
		{"file preshared key not base64", file("psk.conf", replace(10, "PresharedKey = "+notB64+"\n")), "wireguard_exits[0].file", []string{path("psk.conf") + ":10: PresharedKey:"}, wgquick.ErrBadKey},
		{"file public key 31 bytes", file("pub.conf", replace(9, "PublicKey = "+short+"\n")), "wireguard_exits[0].file", []string{path("pub.conf") + ":9: PublicKey:"}, wgquick.ErrBadKey},
		{"file no peer", file("nopeer.conf", strings.Split(full, "[Peer]")[0]), "wireguard_exits[0].file", []string{path("nopeer.conf") + ": ", "[Peer]"}, wgquick.ErrMissing},
		{"file two peers", file("two.conf", full+"[Peer]\nPublicKey = "+testPeerKey+"\nAllowedIPs = 10.9.0.0/16\n"), "wireguard_exits[0].file",
			[]string{path("two.conf") + ": ", "2 [Peer] sections"}, nil},
		{"file no endpoint", file("noend.conf", replace(11, "")), "wireguard_exits[0].file", []string{path("noend.conf") + ": ", "no Endpoint"}, nil},
		{"file no allowed_ips", file("noallowed.conf", replace(12, "")), "wireguard_exits[0].file", []string{path("noallowed.conf") + ": ", "no AllowedIPs"}, nil},
		// Tunnels naming WireGuard exits.
		{"tunnel exit unknown", func(c *Config) { c.Tunnels[0].Exit = "wg:x" }, "tunnels[0].exit", []string{`"wg:x" is not among wireguard_exits`}, actors.ErrUnknownExit},
		{"tunnel failover exit unknown", func(c *Config) { c.Tunnels[0].Exits = []string{"wg:a", "wg:x"}; c.Tunnels[0].Exit = "ra" },
			"tunnels[0].exits[1]", []string{`"wg:x"`}, actors.ErrUnknownExit},
		{"tunnel exit wg: alone", func(c *Config) { c.Tunnels[0].Exit = "wg:" }, "tunnels[0].exit", nil, signaling.ErrInvalid},
		{"DNS outside AllowedIPs", ex(func(s *WireGuardExitSpec) { s.Peer.AllowedIPs = []string{"10.64.0.0/16"} }),
			"wireguard_exits[0].peer", []string{"DNS fd00::1 is outside"}, ErrWireGuardConfig},
		{"check outside AllowedIPs", ex(func(s *WireGuardExitSpec) {
			s.Interface.DNS, s.Peer.AllowedIPs, s.Check.TCP = nil, []string{"10.64.0.0/16"}, "192.0.2.1:80"
		}), "wireguard_exits[0].check", []string{"192.0.2.1 is outside"}, ErrWireGuardConfig},
		{"two tunnels on one WireGuard exit", func(c *Config) {
			c.Tunnels = append(c.Tunnels, TunnelSpec{Name: "second", Exit: "wg:a", SOCKS: "127.0.0.1:0"})
		}, "tunnels[1].exit", []string{`"wg:a" is already tunnels[0]'s exit`}, nil},
	}
	for _, tc := range cases {
		c := Config{WireGuardExits: []WireGuardExitSpec{k.inlineFull("a")}, Tunnels: []TunnelSpec{{Exit: "wg:a", SOCKS: "127.0.0.1:0"}}}
		tc.mut(&c)
		err := c.Validate()
		wantField(t, tc.name, err, tc.field, tc.also...)
		if err == nil {
			continue
		}
		if strings.HasPrefix(tc.field, "wireguard_exits") && !errors.Is(err, ErrWireGuardConfig) {
			t.Errorf("%s: %v does not wrap ErrWireGuardConfig", tc.name, err)
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: %v does not wrap %v", tc.name, err, tc.is)
		}
		if strings.HasPrefix(tc.name, "file ") && tc.is != nil && tc.is != fs.ErrNotExist {
			var we *wgquick.Error
			if !errors.As(err, &we) || we.File != c.WireGuardExits[0].File {
				t.Errorf("%s: %v carries no wgquick.Error for the file", tc.name, err)
			}
		}
		if _, err2 := New(c); err2 == nil || err2.Error() != err.Error() {
			t.Errorf("%s: New says %v, Validate %v", tc.name, err2, err)
		}
		for _, s := range append(k.secrets(), secretish...) {
			if strings.Contains(err.Error(), s) && !(strings.Contains(tc.name, "public key") && s != k.priv) {
				t.Errorf("%s: %q shows a secret key", tc.name, err)
			}
		}
	}
}

// TestLoadWireGuardDir: every *.conf file of a directory is a WireGuard exit named after it, other
// files and directories are skipped; a file name that is not an id, and a bad file, are errors
// naming the file (file:line: key for a parse error), and no error shows a secret key.
func TestLoadWireGuardDir(t *testing.T) {
	k := newWGKeys(t)
	dir := t.TempDir()
	writeWG(t, dir, "ams-1.conf", k.wgFull())
	writeWG(t, dir, "fra_2.conf", k.wgMinimal())
	writeWG(t, dir, "README.txt", "not a wg-quick file\n")
	writeWG(t, dir, "ams-1.conf.bak", "[Interface]\nbroken\n")
	if err := os.Mkdir(filepath.Join(dir, "old.conf"), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := LoadWireGuardDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["wg:ams-1"] == nil || got["wg:fra_2"] == nil {
		t.Fatalf("loaded %v, want wg:ams-1 and wg:fra_2", got)
	}
	for id, text := range map[string]string{"wg:ams-1": k.wgFull(), "wg:fra_2": k.wgMinimal()} {
		cfg, err := wgquick.Parse("x", strings.NewReader(text))
		if err != nil {
			t.Fatal(err)
		}
		want, err := WireGuardExitFrom(strings.TrimPrefix(id, "wg:"), cfg)
		if err != nil || !reflect.DeepEqual(got[id], want) {
			t.Errorf("%s: %#v, want %#v (%v)", id, got[id], want, err)
		}
	}
	if got["wg:ams-1"].MTU != 1380 || got["wg:fra_2"].MTU != 1420 || got["wg:ams-1"].PresharedKey == nil {
		t.Errorf("MTU %d, %d; preshared key %v", got["wg:ams-1"].MTU, got["wg:fra_2"].MTU, got["wg:ams-1"].PresharedKey)
	}

	full := k.wgFull()
	for _, tc := range []struct {
		name, file, text string
		also             []string
		is               error
	}{
		{"bad name", "ams 1.conf", full, []string{"ams 1.conf", "the name before .conf"}, signaling.ErrInvalid},
		{"wg: name", "wg:ams.conf", full, []string{"wg:ams.conf"}, signaling.ErrInvalid},
		{"bad private key", "bad.conf", strings.Replace(full, k.priv, k.priv[:43], 1), []string{"bad.conf:3: PrivateKey:"}, wgquick.ErrBadKey},
		{"bad preshared key", "bad.conf", strings.Replace(full, k.psk, "A"+k.psk, 1), []string{"bad.conf:10: PresharedKey:"}, wgquick.ErrBadKey},
		{"unknown key", "bad.conf", full + "Weight = 1\n", []string{"bad.conf:14: Weight:"}, wgquick.ErrUnknownKey},
		{"two peers", "two.conf", full + "[Peer]\nPublicKey = " + testPeerKey + "\n", []string{"two.conf: ", "2 [Peer] sections"}, nil},
	} {
		d := t.TempDir()
		writeWG(t, d, "good.conf", k.wgMinimal())
		writeWG(t, d, tc.file, tc.text)
		got, err := LoadWireGuardDir(d)
		if err == nil || got != nil || !errors.Is(err, ErrWireGuardConfig) {
			t.Errorf("%s: %v, %v; want an ErrWireGuardConfig error", tc.name, got, err)
			continue
		}
		if tc.is != nil && !errors.Is(err, tc.is) {
			t.Errorf("%s: %v does not wrap %v", tc.name, err, tc.is)
		}
		for _, s := range append(tc.also, filepath.Join(d, tc.file)) {
			if !strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q does not say %q", tc.name, err, s)
			}
		}
		if tc.is == wgquick.ErrBadKey || tc.is == wgquick.ErrUnknownKey {
			var we *wgquick.Error
			if !errors.As(err, &we) || we.File != filepath.Join(d, tc.file) || we.Line == 0 {
				t.Errorf("%s: %v carries no wgquick.Error with the file and line", tc.name, err)
			}
		}
		for _, s := range append(k.secrets(), k.priv[:43], "A"+k.psk) {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: %q shows a secret key", tc.name, err)
			}
		}
	}
	if _, err := LoadWireGuardDir(filepath.Join(dir, "missing")); !errors.Is(err, ErrWireGuardConfig) || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing directory: %v", err)
	}
}

// TestWireGuardExampleIsValid: docs/examples/wireguard-exits.yaml decodes with no unknown key and,
// with its file at docs/examples/provider-fra.conf, is a valid configuration with both exits.
func TestWireGuardExampleIsValid(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "docs", "examples", "wireguard-exits.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := decodeConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.WireGuardExits) != 2 || cfg.WireGuardExits[0].File != "/etc/warren/wg/provider-fra.conf" {
		t.Fatalf("the example's exits: %+v", cfg.WireGuardExits)
	}
	cfg.WireGuardExits[0].File = filepath.Join("..", "docs", "examples", "provider-fra.conf")
	e, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	fra, home := e.WireGuardExits()["wg:provider-fra"], e.WireGuardExits()["wg:home"]
	if fra == nil || home == nil || fra.MTU != 1420 || fra.Endpoint != "203.0.113.10:51820" || len(fra.Addresses) != 2 ||
		home.PresharedKey == nil || home.Keepalive != 25 || home.Check.TCP != "10.64.0.1:53" || fra.Check.HTTP == "" {
		t.Fatalf("the example's exits: %v, %v", fra, home)
	}
}
