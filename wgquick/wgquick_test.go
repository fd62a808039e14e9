package wgquick

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// key returns the base64 of 32 bytes of b.
func key(b byte) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{b}, 32)) }

var (
	privB64 = key(0x11)
	pubB64  = key(0x22)
	pskB64  = key(0x33)
	pub2B64 = key(0x44)
)

// provider is a typical VPN provider's configuration.
var provider = `# Provider: example VPN, server se-sto-001
[Interface]
PrivateKey = ` + privB64 + `
Address = 10.64.12.34/32, fd7d:76ee:e68f:a993::2/128
DNS = 10.64.0.1, 2606:4700:4700::1111, vpn.example
MTU = 1420

[Peer]
# the server
PublicKey = ` + pubB64 + `
PresharedKey = ` + pskB64 + `   # per-client PSK
Endpoint = se-sto-wg-001.vpn.example:51820
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`

func TestParseProvider(t *testing.T) {
	cfg, err := Parse("wg0.conf", strings.NewReader(provider))
	if err != nil {
		t.Fatal(err)
	}
	checkProvider(t, cfg)
}

func checkProvider(t *testing.T, cfg *Config) {
	t.Helper()
	i := cfg.Interface
	if i.PrivateKey != [32]byte(bytes.Repeat([]byte{0x11}, 32)) {
		t.Errorf("PrivateKey wrong")
	}
	wantAddr := []netip.Prefix{netip.MustParsePrefix("10.64.12.34/32"), netip.MustParsePrefix("fd7d:76ee:e68f:a993::2/128")}
	if !slices.Equal(i.Addresses, wantAddr) {
		t.Errorf("Addresses = %v, want %v", i.Addresses, wantAddr)
	}
	wantDNS := []netip.Addr{netip.MustParseAddr("10.64.0.1"), netip.MustParseAddr("2606:4700:4700::1111")}
	if !slices.Equal(i.DNS, wantDNS) || !slices.Equal(i.DNSSearch, []string{"vpn.example"}) {
		t.Errorf("DNS = %v, DNSSearch = %v", i.DNS, i.DNSSearch)
	}
	if i.MTU != 1420 || i.ListenPort != 0 {
		t.Errorf("MTU = %d, ListenPort = %d", i.MTU, i.ListenPort)
	}
	if len(cfg.Peers) != 1 {
		t.Fatalf("%d peers", len(cfg.Peers))
	}
	p := cfg.Peers[0]
	if p.PublicKey != [32]byte(bytes.Repeat([]byte{0x22}, 32)) {
		t.Errorf("PublicKey wrong")
	}
	if p.PresharedKey == nil || *p.PresharedKey != [32]byte(bytes.Repeat([]byte{0x33}, 32)) {
		t.Errorf("PresharedKey wrong")
	}
	if p.Endpoint != "se-sto-wg-001.vpn.example:51820" {
		t.Errorf("Endpoint = %q", p.Endpoint)
	}
	wantAllowed := []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), netip.MustParsePrefix("::/0")}
	if !slices.Equal(p.AllowedIPs, wantAllowed) {
		t.Errorf("AllowedIPs = %v", p.AllowedIPs)
	}
	if p.PersistentKeepalive != 25 {
		t.Errorf("PersistentKeepalive = %d", p.PersistentKeepalive)
	}
}

func TestParseCRLFAndBOM(t *testing.T) {
	in := "\ufeff" + strings.ReplaceAll(provider, "\n", "\r\n")
	cfg, err := Parse("wg0.conf", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	checkProvider(t, cfg)
	// Line numbers still count from the first line after the BOM.
	in = "\ufeff[Interface]\r\nPrivateKey = " + privB64 + "\r\nBogus = 1\r\n"
	_, err = Parse("wg0.conf", strings.NewReader(in))
	if err == nil || err.Error() != "wg0.conf:3: Bogus: unknown key in [Interface]" {
		t.Fatalf("err = %v", err)
	}
}

func TestParseFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wg0.conf")
	if err := os.WriteFile(path, []byte(provider), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := ParseFile(path)
	if err != nil {
		t.Fatal(err)
	}
	checkProvider(t, cfg)

	if err := os.WriteFile(path, []byte("[Interface]\nPostUp = iptables -A\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ParseFile(path)
	if want := path + ":2: PostUp: not supported in userspace"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %s", err, want)
	}
	if _, err := ParseFile(filepath.Join(t.TempDir(), "absent.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("err = %v, want ErrNotExist", err)
	}
}

// TestParseForms covers the accepted variations of the format.
func TestParseForms(t *testing.T) {
	in := `
  # leading comment and blank lines

[INTERFACE]
privatekey=` + privB64 + `
ADDRESS = 10.0.0.2 # no prefix length: /32
address	=	fd00::2 ,10.1.0.2/24
Address = 10.2.0.2/32 10.3.0.2/32
dns = 9.9.9.9 example.com
ListenPort = 51820
[peer]
PublicKey = ` + pubB64 + `
AllowedIPs = 10.9.9.9/8, 192.168.1.1
allowedips = fd00::1
Endpoint = [2001:db8::1]:51820
PersistentKeepalive = OFF
[Peer]
PublicKey = ` + pub2B64 + `
Endpoint = 192.0.2.1:1
PersistentKeepalive = 0`
	cfg, err := Parse("x.conf", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	i := cfg.Interface
	wantAddr := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.2/32"), netip.MustParsePrefix("fd00::2/128"),
		netip.MustParsePrefix("10.1.0.2/24"), // not masked: an interface address
		netip.MustParsePrefix("10.2.0.2/32"), netip.MustParsePrefix("10.3.0.2/32"),
	}
	if !slices.Equal(i.Addresses, wantAddr) {
		t.Errorf("Addresses = %v", i.Addresses)
	}
	if !slices.Equal(i.DNS, []netip.Addr{netip.MustParseAddr("9.9.9.9")}) || !slices.Equal(i.DNSSearch, []string{"example.com"}) {
		t.Errorf("DNS = %v %v", i.DNS, i.DNSSearch)
	}
	if i.ListenPort != 51820 || i.MTU != 0 {
		t.Errorf("ListenPort = %d MTU = %d", i.ListenPort, i.MTU)
	}
	if len(cfg.Peers) != 2 {
		t.Fatalf("%d peers", len(cfg.Peers))
	}
	p := cfg.Peers[0]
	wantAllowed := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.1/32"), netip.MustParsePrefix("fd00::1/128"),
	}
	if !slices.Equal(p.AllowedIPs, wantAllowed) || p.Endpoint != "[2001:db8::1]:51820" || p.PersistentKeepalive != 0 || p.PresharedKey != nil {
		t.Errorf("peer 0 = %+v", p)
	}
	if p := cfg.Peers[1]; p.Endpoint != "192.0.2.1:1" || p.AllowedIPs != nil || p.PersistentKeepalive != 0 {
		t.Errorf("peer 1 = %+v", p)
	}
}

// minimal returns a valid file with extra lines in [Interface] and in [Peer]; the [Interface]
// header is line 1, its extra lines start at line 4, the [Peer] header follows them.
func minimal(iface, peer string) string {
	return "[Interface]\nPrivateKey = " + privB64 + "\nAddress = 10.0.0.2/32\n" + iface +
		"[Peer]\nPublicKey = " + pubB64 + "\n" + peer
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		sentinel error
		want     string // the whole message
	}{
		// Syntax.
		{"outside section", "Address = 10.0.0.2\n", ErrSyntax, "f.conf:1: Address: syntax error: key outside a section"},
		{"no equals", minimal("MTU 1420\n", ""), ErrSyntax, "f.conf:4: syntax error: want Key = Value"},
		{"bare key", minimal("MTU\n", ""), ErrSyntax, "f.conf:4: MTU: syntax error: want Key = Value"},
		{"empty key", minimal(" = 1\n", ""), ErrSyntax, "f.conf:4: syntax error: invalid key name"},
		{"spaced key", minimal("Private Key = 1\n", ""), ErrSyntax, "f.conf:4: syntax error: invalid key name"},
		{"header unclosed", "[Interface\n", ErrSyntax, "f.conf:1: syntax error: malformed section header"},
		{"header trailing", "[Interface] x\n", ErrSyntax, "f.conf:1: syntax error: malformed section header"},
		{"control char", minimal("MTU = 14\x0020\n", ""), ErrSyntax, "f.conf:4: syntax error: control character"},
		{"lone CR", minimal("MTU = 14\r20\n", ""), ErrSyntax, "f.conf:4: syntax error: control character"},
		{"bad utf8", minimal("# \xff\n", ""), ErrSyntax, "f.conf:4: syntax error: not valid UTF-8"},
		// Sections.
		{"unknown section", "[Interface]\n[Wireguard]\n", ErrMissing, "f.conf:1: PrivateKey: missing from [Interface] section"},
		{"unknown section first", "[Wireguard]\n", ErrUnknownSection, "f.conf:1: unknown section [Wireguard]"},
		{"unknown section spaced", "[ Interface ]\n", ErrUnknownSection, "f.conf:1: unknown section"},
		{"unknown section after", minimal("", "[Relay]\n"), ErrUnknownSection, "f.conf:6: unknown section [Relay]"},
		{"two interfaces", minimal("", "[interface]\n"), ErrDuplicate, "f.conf:6: duplicate [Interface] section (first on line 1)"},
		{"no interface", "# nothing\n", ErrMissing, "f.conf: missing [Interface] section"},
		{"empty", "", ErrMissing, "f.conf: missing [Interface] section"},
		{"no peer", "[Interface]\nPrivateKey = " + privB64 + "\nAddress = 10.0.0.2\n", ErrMissing, "f.conf: missing [Peer] section"},
		// Keys.
		{"unknown iface key", minimal("ListenPorts = 1\n", ""), ErrUnknownKey, "f.conf:4: ListenPorts: unknown key in [Interface]"},
		{"unknown peer key", minimal("", "Address = 10.0.0.3\n"), ErrUnknownKey, "f.conf:6: Address: unknown key in [Peer]"},
		{"iface key in peer", minimal("", "PrivateKey = "+privB64+"\n"), ErrUnknownKey, "f.conf:6: PrivateKey: unknown key in [Peer]"},
		{"peer key in iface", minimal("Endpoint = a:1\n", ""), ErrUnknownKey, "f.conf:4: Endpoint: unknown key in [Interface]"},
		{"PreUp", minimal("PreUp = x\n", ""), ErrUnsupportedKey, "f.conf:4: PreUp: not supported in userspace"},
		{"PostUp", minimal("postup = iptables -I OUTPUT\n", ""), ErrUnsupportedKey, "f.conf:4: PostUp: not supported in userspace"},
		{"PreDown", minimal("PreDown = x\n", ""), ErrUnsupportedKey, "f.conf:4: PreDown: not supported in userspace"},
		{"PostDown", minimal("PostDown = x\n", ""), ErrUnsupportedKey, "f.conf:4: PostDown: not supported in userspace"},
		{"Table", minimal("Table = off\n", ""), ErrUnsupportedKey, "f.conf:4: Table: not supported in userspace"},
		{"SaveConfig", minimal("SaveConfig = false\n", ""), ErrUnsupportedKey, "f.conf:4: SaveConfig: not supported in userspace"},
		{"FwMark", minimal("FwMark = 0x1\n", ""), ErrUnsupportedKey, "f.conf:4: FwMark: not supported in userspace"},
		{"PostUp in peer", minimal("", "PostUp = x\n"), ErrUnknownKey, "f.conf:6: PostUp: unknown key in [Peer]"},
		// Duplicates.
		{"dup PrivateKey", minimal("PrivateKey = "+pskB64+"\n", ""), ErrDuplicate, "f.conf:4: PrivateKey: duplicate key (first on line 2)"},
		{"dup MTU", minimal("MTU = 1420\nmtu = 1420\n", ""), ErrDuplicate, "f.conf:5: MTU: duplicate key (first on line 4)"},
		{"dup ListenPort", minimal("ListenPort = 1\nListenPort = 2\n", ""), ErrDuplicate, "f.conf:5: ListenPort: duplicate key (first on line 4)"},
		{"dup PublicKey", minimal("", "PublicKey = "+pub2B64+"\n"), ErrDuplicate, "f.conf:6: PublicKey: duplicate key (first on line 5)"},
		{"dup PresharedKey", minimal("", "PresharedKey = "+pskB64+"\nPresharedKey = "+pskB64+"\n"), ErrDuplicate, "f.conf:7: PresharedKey: duplicate key (first on line 6)"},
		{"dup Endpoint", minimal("", "Endpoint = a:1\nEndpoint = b:1\n"), ErrDuplicate, "f.conf:7: Endpoint: duplicate key (first on line 6)"},
		{"dup Keepalive", minimal("", "PersistentKeepalive = 1\nPersistentKeepalive = off\n"), ErrDuplicate, "f.conf:7: PersistentKeepalive: duplicate key (first on line 6)"},
		{"dup peer", minimal("", "[Peer]\nPublicKey = "+pubB64+"\n"), ErrDuplicate, "f.conf:7: PublicKey: duplicate peer (the [Peer] with this PublicKey on line 5)"},
		// Missing.
		{"missing PrivateKey", "\n[Interface]\nAddress = 10.0.0.2\n[Peer]\nPublicKey = " + pubB64 + "\n", ErrMissing, "f.conf:2: PrivateKey: missing from [Interface] section"},
		{"missing Address", "[Peer]\nPublicKey = " + pubB64 + "\n[Interface]\nPrivateKey = " + privB64 + "\n", ErrMissing, "f.conf:3: Address: missing from [Interface] section"},
		{"missing PublicKey", "[Interface]\nPrivateKey = " + privB64 + "\nAddress = 10.0.0.2\n[Peer]\nEndpoint = a:1\n[Peer]\nPublicKey = " + pub2B64 + "\n", ErrMissing, "f.conf:4: PublicKey: missing from [Peer] section"},
		{"empty peer at end", minimal("", "[Peer]\n"), ErrMissing, "f.conf:6: PublicKey: missing from [Peer] section"},
		// Keys' encoding.
		{"PublicKey short", minimal("", "[Peer]\nPublicKey = abc\n"), ErrBadKey, `f.conf:7: PublicKey: invalid key "abc": want 44 characters of standard base64 encoding 32 bytes`},
		{"PublicKey urlsafe", minimal("", "[Peer]\nPublicKey = "+strings.Repeat("_", 43)+"=\n"), ErrBadKey, `f.conf:7: PublicKey: invalid key "` + strings.Repeat("_", 43) + `=": not the standard base64 encoding of 32 bytes`},
		{"PublicKey unpadded", minimal("", "[Peer]\nPublicKey = "+strings.TrimSuffix(pub2B64, "=")+"A\n"), ErrBadKey, `f.conf:7: PublicKey: invalid key "` + strings.TrimSuffix(pub2B64, "=") + `A": not the standard base64 encoding of 32 bytes`},
		{"PublicKey zero", minimal("", "[Peer]\nPublicKey = "+key(0)+"\n"), ErrBadKey, "f.conf:7: PublicKey: invalid key: all zero"},
		{"PublicKey empty", minimal("", "[Peer]\nPublicKey =\n"), ErrBadKey, `f.conf:7: PublicKey: invalid key "": want 44 characters of standard base64 encoding 32 bytes`},
		{"PublicKey is private", minimal("", "[Peer]\nPublicKey = "+privB64+"\n"), ErrBadKey, "f.conf:7: PublicKey: invalid key: equal to the PrivateKey or a PresharedKey of this file"},
		{"PublicKey is psk", minimal("", "PresharedKey = "+pskB64+"\n[Peer]\nPublicKey = "+pskB64+"\n"), ErrBadKey, "f.conf:8: PublicKey: invalid key: equal to the PrivateKey or a PresharedKey of this file"},
		{"PrivateKey zero", "[Interface]\nPrivateKey = " + key(0) + "\n", ErrBadKey, "f.conf:2: PrivateKey: invalid key: all zero"},
		{"PrivateKey empty", "[Interface]\nPrivateKey = \n", ErrBadKey, "f.conf:2: PrivateKey: invalid key: want 44 characters of standard base64 encoding 32 bytes"},
		{"PresharedKey bad", minimal("", "PresharedKey = "+pskB64[:40]+"\n"), ErrBadKey, "f.conf:6: PresharedKey: invalid key: want 44 characters of standard base64 encoding 32 bytes"},
		// Values.
		{"MTU low", minimal("MTU = 1279\n", ""), ErrBadValue, `f.conf:4: MTU: invalid value "1279": want a number 1280..9000`},
		{"MTU high", minimal("MTU = 9001\n", ""), ErrBadValue, `f.conf:4: MTU: invalid value "9001": want a number 1280..9000`},
		{"MTU sign", minimal("MTU = +1420\n", ""), ErrBadValue, `f.conf:4: MTU: invalid value "+1420": want a number 1280..9000`},
		{"MTU empty", minimal("MTU =\n", ""), ErrBadValue, `f.conf:4: MTU: invalid value "": want a number 1280..9000`},
		{"ListenPort high", minimal("ListenPort = 65536\n", ""), ErrBadValue, `f.conf:4: ListenPort: invalid value "65536": want a number 0..65535`},
		{"ListenPort long", minimal("ListenPort = 99999999999999999999\n", ""), ErrBadValue, `f.conf:4: ListenPort: invalid value "99999999999999999999": want a number 0..65535`},
		{"Address bad", minimal("Address = 10.0.0.300/32\n", ""), ErrBadValue, `f.conf:4: Address: invalid value "10.0.0.300/32": not an IP address or prefix`},
		{"Address zone", minimal("Address = fe80::1%eth0\n", ""), ErrBadValue, `f.conf:4: Address: invalid value "fe80::1%eth0": not an IP address or prefix`},
		{"Address unspecified", minimal("Address = 0.0.0.0/0\n", ""), ErrBadValue, `f.conf:4: Address: invalid value "0.0.0.0/0": not a unicast address`},
		{"Address empty item", minimal("Address = 10.0.0.3,,10.0.0.4\n", ""), ErrBadValue, "f.conf:4: Address: invalid value: empty list item"},
		{"Address empty", minimal("Address =\n", ""), ErrBadValue, "f.conf:4: Address: invalid value: empty"},
		{"DNS bad IP", minimal("DNS = 1.1.1\n", ""), ErrBadValue, `f.conf:4: DNS: invalid value "1.1.1": not an IP address`},
		{"DNS bad v6", minimal("DNS = 2606:4700::1111::1\n", ""), ErrBadValue, `f.conf:4: DNS: invalid value "2606:4700::1111::1": not an IP address`},
		{"DNS bad domain", minimal("DNS = 1.1.1.1, exa$mple.com\n", ""), ErrBadValue, `f.conf:4: DNS: invalid value "exa$mple.com": neither an IP address nor a search domain`},
		{"AllowedIPs spaces", minimal("", "AllowedIPs = 0.0.0.0/0 ::/0\n"), ErrBadValue, `f.conf:6: AllowedIPs: invalid value "0.0.0.0/0 ::/0": not an IP address or prefix`},
		{"AllowedIPs bad", minimal("", "AllowedIPs = 10.0.0.0/33\n"), ErrBadValue, `f.conf:6: AllowedIPs: invalid value "10.0.0.0/33": not an IP address or prefix`},
		{"AllowedIPs trailing comma", minimal("", "AllowedIPs = 10.0.0.0/8,\n"), ErrBadValue, "f.conf:6: AllowedIPs: invalid value: empty list item"},
		{"Endpoint no port", minimal("", "Endpoint = vpn.example\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "vpn.example": want host:port, an IPv6 address in brackets`},
		{"Endpoint bare v6", minimal("", "Endpoint = 2001:db8::1:51820\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "2001:db8::1:51820": want host:port, an IPv6 address in brackets`},
		{"Endpoint port 0", minimal("", "Endpoint = vpn.example:0\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "vpn.example:0": want a port 1..65535`},
		{"Endpoint port name", minimal("", "Endpoint = vpn.example:wireguard\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "vpn.example:wireguard": want a port 1..65535`},
		{"Endpoint empty host", minimal("", "Endpoint = :51820\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value ":51820": empty host`},
		{"Endpoint bad host", minimal("", "Endpoint = vpn example:51820\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "vpn example:51820": not a host name`},
		{"Endpoint bad v4", minimal("", "Endpoint = 192.0.2.300:51820\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "192.0.2.300:51820": not an IPv4 address`},
		{"Endpoint name in brackets", minimal("", "Endpoint = [vpn.example]:51820\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "[vpn.example]:51820": want an IPv6 address (without a zone) in brackets`},
		{"Endpoint zone", minimal("", "Endpoint = [fe80::1%eth0]:51820\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "[fe80::1%eth0]:51820": want an IPv6 address (without a zone) in brackets`},
		{"Keepalive high", minimal("", "PersistentKeepalive = 65536\n"), ErrBadValue, `f.conf:6: PersistentKeepalive: invalid value "65536": want a number 0..65535`},
		{"Keepalive word", minimal("", "PersistentKeepalive = on\n"), ErrBadValue, `f.conf:6: PersistentKeepalive: invalid value "on": want a number 0..65535`},
		{"long value cut", minimal("", "Endpoint = "+strings.Repeat("a", 100)+"\n"), ErrBadValue, `f.conf:6: Endpoint: invalid value "` + strings.Repeat("a", 64) + `"…: want host:port, an IPv6 address in brackets`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("f.conf", strings.NewReader(tt.in))
			if err == nil {
				t.Fatalf("no error; parsed %v", cfg)
			}
			if cfg != nil {
				t.Errorf("config with an error")
			}
			if !errors.Is(err, tt.sentinel) {
				t.Errorf("error %v is not %v", err, tt.sentinel)
			}
			var e *Error
			if !errors.As(err, &e) || e.File != "f.conf" {
				t.Errorf("error %v is not an *Error for f.conf", err)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got %s\nwant %s", err, tt.want)
			}
		})
	}
}

func TestParseTooLarge(t *testing.T) {
	in := minimal("", "") + strings.Repeat("# padding\n", MaxSize/10)
	_, err := Parse("big.conf", strings.NewReader(in))
	if !errors.Is(err, ErrTooLarge) || err.Error() != "big.conf: too large: over 1048576 bytes" {
		t.Fatalf("err = %v", err)
	}
	// Exactly MaxSize bytes is fine.
	in = in[:MaxSize]
	if _, err := Parse("big.conf", strings.NewReader(in)); err != nil {
		t.Fatalf("MaxSize bytes: %v", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestParseReadError(t *testing.T) {
	_, err := Parse("r.conf", failingReader{})
	if err == nil || err.Error() != "r.conf: read: disk on fire" {
		t.Fatalf("err = %v", err)
	}
}

// TestErrorsHideSecrets: no error about a PrivateKey or PresharedKey line contains its value,
// however it is malformed.
func TestErrorsHideSecrets(t *testing.T) {
	secret := "SuperSecretKeyMaterial+/0123456789abcdefgh"
	values := []string{
		secret,                // 42 characters
		secret + "AA",         // 44, not valid
		secret + "B=",         // 44, non-zero padding bits
		secret + "==",         // 44, wrong padding
		secret + secret,       // long
		secret + " " + secret, // internal space
		"é" + secret[:41] + "=",
	}
	for _, v := range values {
		for _, in := range []string{
			"[Interface]\nPrivateKey = " + v + "\n",
			"[Interface]\nPrivateKey=" + v + "\n",
			"[Interface]\nPrivateKey " + v + "\n",    // no '='
			"[Interface]\nPrivate Key = " + v + "\n", // bad key name
			"[Interface]\nPrivateKey = " + privB64 + "\nPrivateKey = " + v + "\n",
			"[Interface]\nPrivateKey = " + v + "\x01\n",
			"PrivateKey = " + v + "\n", // outside a section
			minimal("", "PresharedKey = "+v+"\n"),
			minimal("", "PresharedKey = "+pskB64+"\npresharedkey = "+v+"\n"),
			minimal("", "Preshared-Key = "+v+"\n"),
			"[" + v + "]\n",
			v + "\n",
			v + " = 1\n",
		} {
			_, err := Parse("s.conf", strings.NewReader(in))
			if err == nil {
				t.Errorf("no error for %q", in)
				continue
			}
			for _, part := range []string{v, secret[:16], secret[len(secret)-16:]} {
				if strings.Contains(err.Error(), part) {
					t.Errorf("error %q contains secret %q", err, part)
				}
			}
		}
	}
	// A valid private key in a file with a later error.
	_, err := Parse("s.conf", strings.NewReader("[Interface]\nPrivateKey = "+privB64+"\nPostUp = echo "+privB64+"\n"))
	if err == nil || strings.Contains(err.Error(), privB64) {
		t.Errorf("err = %v", err)
	}
}

// TestStringHidesSecrets: every rendering of a Config, its Interface and its Peers hides the
// private and preshared keys.
func TestStringHidesSecrets(t *testing.T) {
	cfg, err := Parse("wg0.conf", strings.NewReader(provider))
	if err != nil {
		t.Fatal(err)
	}
	want := `[Interface]
PrivateKey = (hidden)
Address = 10.64.12.34/32, fd7d:76ee:e68f:a993::2/128
DNS = 10.64.0.1, 2606:4700:4700::1111, vpn.example
MTU = 1420

[Peer]
PublicKey = ` + pubB64 + `
PresharedKey = (hidden)
Endpoint = se-sto-wg-001.vpn.example:51820
AllowedIPs = 0.0.0.0/0, ::/0
PersistentKeepalive = 25
`
	if got := cfg.String(); got != want {
		t.Errorf("String:\n%s\nwant:\n%s", got, want)
	}
	// The rendering parses back (with the secret keys restored) to the same configuration.
	back := strings.Replace(cfg.String(), "PrivateKey = (hidden)", "PrivateKey = "+privB64, 1)
	back = strings.Replace(back, "PresharedKey = (hidden)", "PresharedKey = "+pskB64, 1)
	if cfg2, err := Parse("back", strings.NewReader(back)); err != nil || cfg2.String() != want {
		t.Errorf("reparse: %v\n%v", err, cfg2)
	}
	var slogBuf bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&slogBuf, nil))
	logger.Info("cfg", "cfg", cfg, "iface", cfg.Interface, "peer", cfg.Peers[0])
	renderings := []string{
		fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%x", cfg),
		fmt.Sprint(*cfg), fmt.Sprintf("%+v", *cfg), fmt.Sprintf("%#v", *cfg),
		fmt.Sprintf("%v %+v %#v", cfg.Interface, cfg.Peers, cfg.Peers[0]), slogBuf.String(),
	}
	secrets := []string{privB64, pskB64, fmt.Sprint(cfg.Interface.PrivateKey), fmt.Sprint(*cfg.Peers[0].PresharedKey),
		fmt.Sprintf("%x", cfg.Interface.PrivateKey[:]), fmt.Sprintf("%x", cfg.Peers[0].PresharedKey[:])}
	for _, r := range renderings {
		for _, s := range secrets {
			if strings.Contains(r, s) {
				t.Errorf("rendering contains a secret:\n%s", r)
			}
		}
	}
	var nilCfg *Config
	if nilCfg.String() != "<nil>" {
		t.Errorf("nil String = %q", nilCfg.String())
	}
}
