package engine

// WireGuard exits (docs/wireguard.md): standard WireGuard servers as exits, from wg-quick files or
// the same fields inline. Inline fields are checked by the same strict parser as files (package
// wgquick): they are written out as a wg-quick text, one key per line, and an error on a line is
// reported under the field that line came from. Nothing here logs, and no error carries a secret.

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/signaling"
	"github.com/warren-tunnel/warren/wgquick"
)

// WireGuardExitSpec names a standard WireGuard server as an exit, whose id is "wg:" + Name
// (usable wherever an exit id is: a tunnel's exit and exits, Switch, pools). Exactly one of File
// and the inline Interface and Peer.
type WireGuardExitSpec struct {
	Name string `yaml:"name"` // 1-64 of A-Z a-z 0-9 _ -
	// File is a wg-quick configuration with one [Peer], which must have an Endpoint.
	File      string             `yaml:"file"`
	Interface WireGuardInterface `yaml:"interface"`
	Peer      WireGuardPeer      `yaml:"peer"`
	Check     WireGuardCheck     `yaml:"check"`
}

// WireGuardInterface is a wg-quick [Interface] section inline.
type WireGuardInterface struct {
	PrivateKey string   `yaml:"private_key"`
	Address    []string `yaml:"address"` // the client's tunnel addresses, e.g. 10.64.0.2/32, fd00::2/128
	DNS        []string `yaml:"dns"`     // resolvers inside the tunnel, for names proxied through it
	MTU        int      `yaml:"mtu"`     // default 1420
}

// WireGuardPeer is a wg-quick [Peer] section inline: the server.
type WireGuardPeer struct {
	PublicKey           string   `yaml:"public_key"`
	PresharedKey        string   `yaml:"preshared_key"`
	Endpoint            string   `yaml:"endpoint"`             // host:port; a name resolves again on every reconnection
	AllowedIPs          []string `yaml:"allowed_ips"`          // where the server takes traffic, e.g. 0.0.0.0/0, ::/0
	PersistentKeepalive int      `yaml:"persistent_keepalive"` // seconds; default: the tunnel's keepalive
}

// WireGuardCheck proves that a WireGuard exit forwards, besides answering handshakes: at most one
// of TCP (host:port to connect to through the tunnel) and HTTP (a URL to GET; any status below 500
// passes). Neither: the handshake alone. It runs before the tunnel is Up and in its health probes.
type WireGuardCheck struct {
	TCP  string `yaml:"tcp"`
	HTTP string `yaml:"http"`
}

// ErrWireGuardConfig is wrapped by every error about a WireGuard exit's configuration.
var ErrWireGuardConfig = errors.New("invalid WireGuard exit")

// resolveWireGuardExits checks specs and builds the exits, keyed by id; field names the list.
func resolveWireGuardExits(specs []WireGuardExitSpec, field string) (map[string]*actors.WireGuardExit, error) {
	out := map[string]*actors.WireGuardExit{}
	for i := range specs {
		path := fmt.Sprintf("%s[%d]", field, i)
		w, err := specs[i].resolve(path)
		if err != nil {
			return nil, err
		}
		if _, dup := out[w.ID]; dup {
			return nil, fieldErr(path+".name", "%w: %q used twice", ErrWireGuardConfig, specs[i].Name)
		}
		out[w.ID] = w
	}
	return out, nil
}

func (s *WireGuardExitSpec) resolve(path string) (*actors.WireGuardExit, error) {
	if err := signaling.ValidID(s.Name); err != nil {
		return nil, fieldErr(path+".name", "%w: %w", ErrWireGuardConfig, err)
	}
	inline := s.Interface.PrivateKey != "" || len(s.Interface.Address) > 0 || len(s.Interface.DNS) > 0 || s.Interface.MTU != 0 ||
		s.Peer.PublicKey != "" || s.Peer.PresharedKey != "" || s.Peer.Endpoint != "" || len(s.Peer.AllowedIPs) > 0 || s.Peer.PersistentKeepalive != 0
	var cfg *wgquick.Config
	var err error
	switch {
	case s.File != "" && inline:
		return nil, fieldErr(path+".file", "%w: give a file or interface and peer, not both", ErrWireGuardConfig)
	case s.File != "":
		cfg, err = wgquick.ParseFile(s.File)
		if err != nil {
			return nil, fieldErr(path+".file", "%w: %w", ErrWireGuardConfig, err)
		}
	case inline:
		if cfg, err = s.parseInline(path); err != nil {
			return nil, err
		}
	default:
		return nil, fieldErr(path, "%w: give file, or interface and peer", ErrWireGuardConfig)
	}
	w, err := WireGuardExitFrom(s.Name, cfg)
	switch {
	case err != nil && s.File != "":
		return nil, fieldErr(path+".file", "%s: %w", s.File, err)
	case err != nil && s.Peer.Endpoint == "":
		return nil, fieldErr(path+".peer.endpoint", "%w", err)
	case err != nil && len(s.Peer.AllowedIPs) == 0:
		return nil, fieldErr(path+".peer.allowed_ips", "%w", err)
	case err != nil:
		return nil, fieldErr(path+".peer", "%w", err)
	}
	if w.Check, err = s.Check.resolve(path + ".check"); err != nil {
		return nil, err
	}
	if a, ok := checkTargetAddr(w.Check); ok && !slices.ContainsFunc(w.AllowedIPs, func(p netip.Prefix) bool { return p.Contains(a) }) {
		return nil, fieldErr(path+".check", "%w: %s is outside the server's AllowedIPs", ErrWireGuardConfig, a)
	}
	return w, nil
}

// WireGuardExitFrom makes the exit named name ("wg:" + name) of a parsed wg-quick configuration:
// exactly one [Peer], with an Endpoint and AllowedIPs. The check is left empty. Errors wrap
// ErrWireGuardConfig; the caller names the configuration's file (cfg does not know it).
func WireGuardExitFrom(name string, cfg *wgquick.Config) (*actors.WireGuardExit, error) {
	if len(cfg.Peers) != 1 {
		return nil, fmt.Errorf("%w: %d [Peer] sections: a WireGuard exit is one server, one [Peer]", ErrWireGuardConfig, len(cfg.Peers))
	}
	p := cfg.Peers[0]
	if p.Endpoint == "" {
		return nil, fmt.Errorf("%w: the [Peer] has no Endpoint: Warren dials the server", ErrWireGuardConfig)
	}
	if len(p.AllowedIPs) == 0 {
		return nil, fmt.Errorf("%w: the [Peer] has no AllowedIPs: nothing would go through it", ErrWireGuardConfig)
	}
	for _, a := range cfg.Interface.DNS {
		if !slices.ContainsFunc(p.AllowedIPs, func(pr netip.Prefix) bool { return pr.Contains(a) }) {
			return nil, fmt.Errorf("%w: DNS %s is outside the [Peer]'s AllowedIPs: names are resolved inside the tunnel", ErrWireGuardConfig, a)
		}
	}
	w := &actors.WireGuardExit{ID: actors.WireGuardPrefix + name, PrivateKey: signaling.Key(cfg.Interface.PrivateKey),
		DNS: cfg.Interface.DNS, MTU: cfg.Interface.MTU, PublicKey: signaling.Key(p.PublicKey), Endpoint: p.Endpoint,
		AllowedIPs: p.AllowedIPs, Keepalive: p.PersistentKeepalive}
	if w.MTU == 0 {
		w.MTU = 1420
	}
	if p.PresharedKey != nil {
		k := signaling.Key(*p.PresharedKey)
		w.PresharedKey = &k
	}
	for _, a := range cfg.Interface.Addresses {
		if !slices.Contains(w.Addresses, a.Addr().Unmap()) {
			w.Addresses = append(w.Addresses, a.Addr().Unmap())
		}
	}
	return w, nil
}

// parseInline writes the inline fields as a wg-quick text and parses it strictly; an error is
// reported under the field its line came from. A value must be one line without a comment, and a
// list item one value (wg-quick would split it on commas, and addresses on spaces).
func (s *WireGuardExitSpec) parseInline(path string) (*wgquick.Config, error) {
	var b strings.Builder
	fields := []string{""} // fields[line-1]: the field of that line
	var bad error          // the first value that cannot be one line of its own
	add := func(field, key, value string) {
		item := strings.HasSuffix(field, "]")
		switch {
		case bad != nil:
		case item && (strings.ContainsAny(value, "\r\n#,") || len(strings.Fields(value)) > 1):
			bad = fieldErr(field, "%w: %q: one value per list item", ErrWireGuardConfig, echoValue(value))
		case strings.ContainsAny(value, "\r\n#"):
			// Not echoed: it may be a key.
			bad = fieldErr(field, "%w: the value holds a line break or '#'", ErrWireGuardConfig)
		}
		b.WriteString(key + " = " + value + "\n")
		fields = append(fields, field)
	}
	b.WriteString("[Interface]\n")
	in, pe := path+".interface", path+".peer"
	if s.Interface.PrivateKey != "" {
		add(in+".private_key", "PrivateKey", s.Interface.PrivateKey)
	}
	for i, a := range s.Interface.Address {
		add(fmt.Sprintf("%s.address[%d]", in, i), "Address", a)
	}
	for i, a := range s.Interface.DNS {
		add(fmt.Sprintf("%s.dns[%d]", in, i), "DNS", a)
	}
	if s.Interface.MTU != 0 {
		add(in+".mtu", "MTU", fmt.Sprint(s.Interface.MTU))
	}
	b.WriteString("[Peer]\n")
	fields = append(fields, "")
	if s.Peer.PublicKey != "" {
		add(pe+".public_key", "PublicKey", s.Peer.PublicKey)
	}
	if s.Peer.PresharedKey != "" {
		add(pe+".preshared_key", "PresharedKey", s.Peer.PresharedKey)
	}
	if s.Peer.Endpoint != "" {
		add(pe+".endpoint", "Endpoint", s.Peer.Endpoint)
	}
	for i, a := range s.Peer.AllowedIPs {
		add(fmt.Sprintf("%s.allowed_ips[%d]", pe, i), "AllowedIPs", a)
	}
	if s.Peer.PersistentKeepalive != 0 {
		add(pe+".persistent_keepalive", "PersistentKeepalive", fmt.Sprint(s.Peer.PersistentKeepalive))
	}
	if bad != nil {
		return nil, bad
	}
	cfg, err := wgquick.Parse(path, strings.NewReader(b.String()))
	if err == nil {
		return cfg, nil
	}
	var pe2 *wgquick.Error
	if errors.As(err, &pe2) {
		field := path
		switch {
		case pe2.Line > 0 && pe2.Line <= len(fields) && fields[pe2.Line-1] != "":
			field = fields[pe2.Line-1]
		case pe2.Key != "":
			field = path + "." + inlineField(pe2.Key)
		}
		return nil, fieldErr(field, "%w: %w", ErrWireGuardConfig, pe2.Err)
	}
	return nil, fieldErr(path, "%w: %w", ErrWireGuardConfig, err)
}

// inlineField is the inline field of a wg-quick key (for errors about a missing key).
func inlineField(key string) string {
	switch strings.ToLower(key) {
	case "privatekey":
		return "interface.private_key"
	case "address":
		return "interface.address"
	case "publickey":
		return "peer.public_key"
	}
	return strings.ToLower(key)
}

func (c WireGuardCheck) resolve(path string) (actors.WireGuardCheck, error) {
	switch {
	case c.TCP != "" && c.HTTP != "":
		return actors.WireGuardCheck{}, fieldErr(path, "%w: give tcp or http, not both", ErrWireGuardConfig)
	case c.TCP != "":
		if _, _, err := actors.SplitTarget(c.TCP); err != nil {
			return actors.WireGuardCheck{}, fieldErr(path+".tcp", "%w: %w", ErrWireGuardConfig, scrub(err, c.TCP))
		}
		return actors.WireGuardCheck{TCP: c.TCP}, nil
	case c.HTTP != "":
		if err := actors.CheckWireGuardURL(c.HTTP); err != nil {
			return actors.WireGuardCheck{}, fieldErr(path+".http", "%w: %q: %w", ErrWireGuardConfig, echoValue(c.HTTP), scrub(err, c.HTTP))
		}
	}
	return actors.WireGuardCheck{HTTP: c.HTTP}, nil
}

// LoadWireGuardDir reads every *.conf file of dir as a WireGuard exit named after the file
// ("wg:" + the name without .conf), as a pool's exits.wireguard_dir does. A file that does not
// parse, or whose name is not a valid id, is an error naming it.
func LoadWireGuardDir(dir string) (map[string]*actors.WireGuardExit, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWireGuardConfig, err)
	}
	out := map[string]*actors.WireGuardExit{}
	for _, e := range entries {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".conf") {
			continue
		}
		name := strings.TrimSuffix(e.Name(), ".conf")
		file := filepath.Join(dir, e.Name())
		if err := signaling.ValidID(name); err != nil {
			return nil, fmt.Errorf("%w: %s: the name before .conf: %w", ErrWireGuardConfig, file, err)
		}
		cfg, err := wgquick.ParseFile(file)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrWireGuardConfig, err)
		}
		w, err := WireGuardExitFrom(name, cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		out[w.ID] = w
	}
	return out, nil
}

// validExitRef checks an exit id as a tunnel names it: a Warren exit's id, or "wg:" + a
// WireGuard exit's name.
func validExitRef(id string) error {
	if name, ok := strings.CutPrefix(id, actors.WireGuardPrefix); ok {
		return signaling.ValidID(name)
	}
	return signaling.ValidID(id)
}

// checkWireGuardRefs: every WireGuard exit the tunnel names (its exit, its failover exits) is one
// of known.
func checkWireGuardRefs(t *TunnelSpec, path string, known map[string]*actors.WireGuardExit) error {
	for i, id := range append([]string{t.Exit}, t.Exits...) {
		if !actors.IsWireGuardExit(id) || known[id] != nil {
			continue
		}
		field := path + ".exit"
		if i > 0 {
			field = fmt.Sprintf("%s.exits[%d]", path, i-1)
		}
		return fieldErr(field, "%w: %q is not among wireguard_exits", actors.ErrUnknownExit, id)
	}
	return nil
}

// WireGuardExits is the engine's WireGuard exits by id ("wg:" + name). The map is shared: do not
// modify it.
func (e *Engine) WireGuardExits() map[string]*actors.WireGuardExit { return *e.wg.Load() }

// SetWireGuardExits replaces the engine's WireGuard exits (a reload). Tunnels opened or updated
// (Tunnel.Update) afterwards use the new set; a running tunnel's current session is untouched,
// and its next session (reconnection, Switch) uses the configuration it was last given. specs
// are checked first (errors name fields under "wireguard_exits"); an error changes nothing.
func (e *Engine) SetWireGuardExits(specs []WireGuardExitSpec) error {
	wg, err := resolveWireGuardExits(specs, "wireguard_exits")
	if err != nil {
		return err
	}
	e.wg.Store(&wg)
	return nil
}

// checkTargetAddr is the IP address a check names literally, if it does.
func checkTargetAddr(c actors.WireGuardCheck) (netip.Addr, bool) {
	host := ""
	switch {
	case c.TCP != "":
		if h, _, err := actors.SplitTarget(c.TCP); err == nil {
			host = h
		}
	case c.HTTP != "":
		if u, err := url.Parse(c.HTTP); err == nil {
			host = u.Hostname()
		}
	}
	a, err := netip.ParseAddr(host)
	return a.Unmap(), err == nil
}
