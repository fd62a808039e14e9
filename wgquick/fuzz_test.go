package wgquick

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// fixedTexts holds the fixed words of the package's error messages: a "secret" value that is a
// piece of them is found in any error, and proves nothing.
const fixedTexts = "syntax error: want Key = Value invalid key name key outside a section malformed section header " +
	"control character not valid UTF-8 unknown section unknown key in [Interface] [Peer] not supported in userspace " +
	"duplicate key (first on line ) duplicate peer (the [Peer] with this PublicKey on line ) missing from section " +
	"invalid key: want 44 characters of standard base64 encoding 32 bytes not the standard base64 encoding of 32 bytes " +
	"all zero equal to the PrivateKey or a PresharedKey of this file invalid value too large: over 1048576 bytes"

// FuzzParse: Parse never panics; a parse that succeeds renders (String, fmt's verbs) without the
// private or preshared keys, and its rendering with the keys put back parses to the same
// configuration; an error is an *Error for the file that contains no value of a PrivateKey or
// PresharedKey line.
//
//	go test ./wgquick -run '^$' -fuzz FuzzParse -fuzztime 20s
func FuzzParse(f *testing.F) {
	f.Add(provider)
	f.Add(minimal("ListenPort = 51820\nDNS = 1.1.1.1 example.com\n", "AllowedIPs = 10.0.0.0/8\n"))
	f.Add("\ufeff[interface]\r\nprivatekey=" + privB64 + "\r\naddress=fd00::2\r\n[peer]\r\npublickey=" + pubB64 + "\r\nendpoint=[::1]:1\r\n")
	f.Add(minimal("", "[Peer]\nPublicKey = "+pub2B64+"\nPresharedKey = "+key(0)+"\nPersistentKeepalive = off\n"))
	f.Add("[Interface]\nPrivateKey = " + privB64 + "#c\nPostUp = x\n")
	f.Add("[Interface]\nPrivateKey = " + strings.TrimSuffix(privB64, "=") + "A\n") // 44 unpadded: Decode's DecodedLen is 33
	f.Add("[Interface]\nPrivateKey = " + privB64[:42] + "B=\n")                    // non-zero padding bits
	f.Add(minimal("", "Endpoint = [fe80::1%eth0]:1\n"))
	f.Add(minimal("", "Endpoint = 1.2.3:1\nAllowedIPs = ::ffff:10.0.0.1/96\n"))
	f.Add(minimal("MTU = 01420\n", "PublicKey = "+pubB64+"\n"))
	f.Add("[Peer]\nPublicKey = " + privB64 + "\n[Interface]\nPrivateKey = " + privB64 + "\nAddress = 10.0.0.2\n")
	f.Add("[Interface\n[]\n[ Peer ]\nx\n=\n\x00\xff")
	// Found by the fuzzer.
	f.Add("#\n[InterfACe]\nPrivAteKeY=0000000000000000000000000000000000000000000=\nAddress=0.0.0.100, aaa:00aa:a00a:a000::0\n" +
		"DNS= 0.0.0.1, 0000:0000:0000::0001,0aa.0000\nMTU= 1700\n[Peer] #\nPuBliCKeY= 000000000000000000000000 0000000000000000000\n")
	f.Add("[InterfACe]\nPrivAteKeY=0000000000000000000000000000000000000000000=\nAddress=0.0.0.1\n[Peer]\n" +
		"PuBliCKeY=0000000000000000000000000000000000000000000=\n[Peer]\nPuBliCKeY=0000000000000000000000000000000000000000008=\n" +
		"PreshAredKeY=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
	f.Add("[InterfACe]\nPrivAteKeY=0000000000000000000000000000000000000000000=\nAddress=1::\nDNS=aaaaaaaaa\n[Peer] \n" +
		"PuBliCKeY=0000000000000000000000000000000000000000008= \nEndpoint=0aaaaaaa:1")
	f.Add("[InterfACe]\nPrivAteKeY=0000000000000000000000000000000000000000000=\nAddress=0.0.0.1,1::/0\nDNS=0.0.0.1,1::,A\n[Peer] \n" +
		"Endpoint=AaAaaa-aa-000aaa.0:0010\nAllowedIPs=0.0.0.0,::/0")
	f.Add("000\x8c\nPrivAteKeY=000000000000\n\n\n\n\nP0=\nPreshAredKeY=000000000000\nP0=\n")
	f.Add("[InterfACe]\nPrivAteKeY=00000000000000000 00000000000000000000000000\n=\n")
	f.Fuzz(func(t *testing.T, in string) {
		cfg, err := Parse("fuzz.conf", strings.NewReader(in))
		if err != nil {
			checkFuzzError(t, in, cfg, err)
			return
		}
		if cfg == nil || len(cfg.Peers) == 0 || len(cfg.Interface.Addresses) == 0 {
			t.Fatalf("parsed an incomplete config: %v", cfg)
		}
		secrets := []string{encode(cfg.Interface.PrivateKey), fmt.Sprint(cfg.Interface.PrivateKey)}
		for _, p := range cfg.Peers {
			if p.PresharedKey != nil && *p.PresharedKey != [32]byte{} {
				secrets = append(secrets, encode(*p.PresharedKey), fmt.Sprint(*p.PresharedKey))
			}
		}
		s := cfg.String()
		for _, r := range []string{s, fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", *cfg), fmt.Sprintf("%v", cfg.Peers)} {
			for _, secret := range secrets {
				if strings.Contains(r, secret) {
					t.Fatalf("rendering shows a secret key:\n%s", r)
				}
			}
		}
		// With the keys put back, the rendering is a wg-quick file of the same configuration.
		back := strings.Replace(s, "PrivateKey = (hidden)", "PrivateKey = "+encode(cfg.Interface.PrivateKey), 1)
		for _, p := range cfg.Peers {
			if p.PresharedKey != nil {
				back = strings.Replace(back, "PresharedKey = (hidden)", "PresharedKey = "+encode(*p.PresharedKey), 1)
			}
		}
		cfg2, err := Parse("back", strings.NewReader(back))
		if err != nil || cfg2.String() != s || cfg2.Interface.PrivateKey != cfg.Interface.PrivateKey {
			t.Fatalf("rendering does not parse back: %v\n%s", err, back)
		}
	})
}

func encode(k [32]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }

func checkFuzzError(t *testing.T, in string, cfg *Config, err error) {
	t.Helper()
	var e *Error
	if cfg != nil || !errors.As(err, &e) || e.File != "fuzz.conf" {
		t.Fatalf("error %v (config %v) is not an *Error for fuzz.conf", err, cfg)
	}
	msg := err.Error()
	// The values of secret-key lines, unless they are also found on another line (echoing that
	// line's value is no leak) or in the fixed texts.
	var secrets, others []string
	for _, line := range strings.Split(strings.TrimPrefix(in, "\ufeff"), "\n") {
		if j := strings.IndexByte(line, '#'); j >= 0 {
			line = line[:j]
		}
		k, v, ok := strings.Cut(line, "=")
		k, v = strings.Trim(k, " \t\r"), strings.Trim(v, " \t\r")
		if ok && (strings.EqualFold(k, "PrivateKey") || strings.EqualFold(k, "PresharedKey")) {
			if len(v) >= 12 {
				secrets = append(secrets, v)
			}
			continue
		}
		others = append(others, line)
	}
	rest := strings.Join(others, "\n") + fixedTexts
	for _, s := range secrets {
		if strings.Contains(msg, s) && !strings.Contains(rest, s) {
			t.Fatalf("error %q shows the secret %q", msg, s)
		}
	}
}
