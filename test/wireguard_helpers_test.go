package test

// Helpers of the WireGuard-exit tests (wireguard_*_test.go): plain WireGuard servers
// (testutil.WGServer, no Warren code) named in a client engine's wireguard_exits, origins that say
// which server forwarded them, and raw SOCKS5 requests by name.

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
	"github.com/warren-tunnel/warren/internal/testutil"
)

// wgOrigin is the port each test WireGuard server forwards to the origin.
const wgOrigin = 8080

// wgName is the name the test servers' DNS gives their own address.
const wgName = "origin.test"

// wgBase is the URL of the forwarded origin, by name (resolved inside the tunnel).
var wgBase = fmt.Sprintf("http://%s:%d", wgName, wgOrigin)

// startWGServerFor starts a WireGuard server whose port wgOrigin forwards to origin (unless
// cfg.Forward says otherwise), at 10.99.0.1 unless cfg.Address says otherwise, whose DNS answers
// wgName with its address (unless cfg.DNS says otherwise).
func startWGServerFor(t testing.TB, origin string, cfg testutil.WGServerConfig) *testutil.WGServer {
	t.Helper()
	if cfg.Forward == nil {
		cfg.Forward = map[uint16]string{wgOrigin: origin}
	}
	if !cfg.Address.IsValid() {
		cfg.Address = netip.MustParseAddr("10.99.0.1")
	}
	if cfg.DNS == nil {
		cfg.DNS = map[string][]netip.Addr{wgName: {cfg.Address}}
	}
	return testutil.StartWGServer(t, cfg)
}

// wgSpec names srv as the WireGuard exit "wg:"+name, from the wg-quick file the server writes for
// its client.
func wgSpec(t testing.TB, name string, srv *testutil.WGServer) engine.WireGuardExitSpec {
	t.Helper()
	return engine.WireGuardExitSpec{Name: name, File: srv.WriteClientConfig(t)}
}

// wgSpecVia is wgSpec with the file's Endpoint replaced by endpoint (a relay in front of srv).
func wgSpecVia(t testing.TB, name string, srv *testutil.WGServer, endpoint netip.AddrPort) engine.WireGuardExitSpec {
	t.Helper()
	conf := srv.ClientConfig()
	line := "Endpoint = " + srv.Endpoint().String() + "\n"
	if !strings.Contains(conf, line) {
		t.Fatalf("the client file has no line %q:\n%s", line, conf)
	}
	path := filepath.Join(t.TempDir(), name+".conf")
	if err := os.WriteFile(path, []byte(strings.Replace(conf, line, "Endpoint = "+endpoint.String()+"\n", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return engine.WireGuardExitSpec{Name: name, File: path}
}

// wgClient starts a client engine (no exit of its own) whose wireguard_exits are specs.
func wgClient(t testing.TB, specs ...engine.WireGuardExitSpec) *engine.Engine {
	t.Helper()
	return startEngine(t, engine.Config{WireGuardExits: specs})
}

// hostOf is the host:port of an httptest server's URL.
func hostOf(srv *httptest.Server) string { return strings.TrimPrefix(srv.URL, "http://") }

// namedOrigin is an HTTP origin that answers GET /who with its name, and serves the payload
// server's /data and /sum otherwise, every answer with its name in the header X-Origin: a
// request's answer says which origin, so which exit or WireGuard server, served it.
func namedOrigin(t testing.TB, name string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Origin", name)
		if r.URL.Path == "/who" {
			_, _ = io.WriteString(w, name)
			return
		}
		payloadHandler(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// fetchNamed downloads Payload(seed, n) from a namedOrigin at base through c, checks it, and
// returns the origin's name.
func fetchNamed(c *http.Client, base string, seed uint64, n int64) (string, error) {
	resp, err := c.Get(fmt.Sprintf("%s/data?seed=%d&n=%d", base, seed, n))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	name := resp.Header.Get("X-Origin")
	if resp.StatusCode != http.StatusOK {
		return name, fmt.Errorf("status %s from %q", resp.Status, name)
	}
	return name, testutil.CheckPayload(resp.Body, seed, n)
}

// who asks base's /who through c and returns the answer.
func who(c *http.Client, base string) (string, error) {
	resp, err := c.Get(base + "/who")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

// SOCKS5 commands and the reply codes of WireGuard exits' refusals (RFC 1928).
const (
	socksCmdConnect      = 0x01
	socksCmdUDPAssociate = 0x03

	socksNetUnreachable  = 0x03
	socksHostUnreachable = 0x04
	socksCmdNotSupported = 0x07
)

// socksRequest speaks SOCKS5 (no auth) to proxyAddr: command cmd for host:port, host an IP
// literal (ATYP 1 or 4) or a name (ATYP 3, resolved by the proxy). It returns the connection
// (also on a failure reply; the caller closes it) and the reply code. The handshake is bounded by
// a 10 s deadline, cleared on return.
func socksRequest(proxyAddr string, cmd byte, host string, port uint16) (*net.TCPConn, byte, error) {
	req := []byte{5, 1, 0, 5, cmd, 0}
	if a, err := netip.ParseAddr(host); err == nil && a.Is4() {
		b := a.As4()
		req = append(append(req, 1), b[:]...)
	} else if err == nil {
		b := a.As16()
		req = append(append(req, 4), b[:]...)
	} else {
		if len(host) > 255 {
			return nil, 0, fmt.Errorf("host %q: longer than 255 bytes", host)
		}
		req = append(append(req, 3, byte(len(host))), host...)
	}
	req = binary.BigEndian.AppendUint16(req, port)
	c, err := net.DialTimeout("tcp", proxyAddr, 10*time.Second)
	if err != nil {
		return nil, 0, err
	}
	tc := c.(*net.TCPConn)
	fail := func(err error) (*net.TCPConn, byte, error) { tc.Close(); return nil, 0, err }
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := tc.Write(req); err != nil { // greeting and request at once
		return fail(err)
	}
	var rep [4 + 255 + 2]byte
	if _, err := io.ReadFull(tc, rep[:2]); err != nil {
		return fail(fmt.Errorf("socks5 method reply: %w", err))
	}
	if rep[0] != 5 || rep[1] != 0 {
		return fail(fmt.Errorf("socks5 method reply %x", rep[:2]))
	}
	if _, err := io.ReadFull(tc, rep[:4]); err != nil {
		return fail(fmt.Errorf("socks5 reply: %w", err))
	}
	n, off := 0, 4
	switch rep[3] {
	case 1:
		n = 4 + 2
	case 4:
		n = 16 + 2
	case 3:
		if _, err := io.ReadFull(tc, rep[4:5]); err != nil {
			return fail(fmt.Errorf("socks5 reply address: %w", err))
		}
		n, off = int(rep[4])+2, 5
	default:
		return fail(fmt.Errorf("socks5 reply address type %d", rep[3]))
	}
	code := rep[1]
	if _, err := io.ReadFull(tc, rep[off:off+n]); err != nil {
		return fail(fmt.Errorf("socks5 reply address: %w", err))
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, code, nil
}

// wantSocksReply sends one SOCKS5 request and checks its reply code exactly.
func wantSocksReply(t testing.TB, proxyAddr string, cmd byte, host string, port uint16, want byte) {
	t.Helper()
	c, code, err := socksRequest(proxyAddr, cmd, host, port)
	if err != nil {
		t.Fatalf("socks5 command %d for %s: %v", cmd, net.JoinHostPort(host, fmt.Sprint(port)), err)
	}
	c.Close()
	if code != want {
		t.Errorf("socks5 command %d for %s: reply %#02x, want %#02x", cmd, net.JoinHostPort(host, fmt.Sprint(port)), code, want)
	}
}

// answer is one request of a load loop: which worker made it, when it started and ended, and who
// answered or its error.
type answer struct {
	worker     int
	start, end time.Time
	who        string
	err        error
}

// reqLoop runs request loops, each on its own goroutine, until wait (each makes at most
// maxRequests) and records every answer.
type reqLoop struct {
	workers int
	stop    chan struct{}
	once    sync.Once
	wg      sync.WaitGroup
	mu      sync.Mutex
	answers []answer
}

const maxRequests = 5000

// startLoop starts workers loops; request makes request i of worker w.
func startLoop(workers int, request func(w, i int) (string, error)) *reqLoop {
	l := &reqLoop{workers: workers, stop: make(chan struct{})}
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := range maxRequests {
				select {
				case <-l.stop:
					return
				default:
				}
				a := answer{worker: w, start: time.Now()}
				a.who, a.err = request(w, i)
				a.end = time.Now()
				l.mu.Lock()
				l.answers = append(l.answers, a)
				l.mu.Unlock()
			}
		}()
	}
	return l
}

// startWhoLoop runs workers loops of /who requests at base through c.
func startWhoLoop(c *http.Client, base string, workers int) *reqLoop {
	return startLoop(workers, func(int, int) (string, error) { return who(c, base) })
}

// since returns the answers of requests that started at or after t.
func (l *reqLoop) since(t time.Time) []answer {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []answer
	for _, a := range l.answers {
		if !a.start.Before(t) {
			out = append(out, a)
		}
	}
	return out
}

// awaitAnswers waits until n requests started at or after from were answered by want.
func (l *reqLoop) awaitAnswers(t testing.TB, from time.Time, n int, want string) {
	t.Helper()
	waitFor(t, pollFor, fmt.Sprintf("%d answers from %q", n, want), func() bool {
		got := 0
		for _, a := range l.since(from) {
			if a.err == nil && a.who == want {
				got++
			}
		}
		return got >= n
	})
}

// awaitEach waits until every worker has n requests started at or after from answered without
// error.
func (l *reqLoop) awaitEach(t testing.TB, from time.Time, n int) {
	t.Helper()
	waitFor(t, pollFor, fmt.Sprintf("%d answers from each of %d workers", n, l.workers), func() bool {
		got := make([]int, l.workers)
		for _, a := range l.since(from) {
			if a.err == nil {
				got[a.worker]++
			}
		}
		return slices.Min(got) >= n
	})
}

// wait stops the loops, waits for them and returns every answer.
func (l *reqLoop) wait() []answer {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.since(time.Time{})
}
