package admin

// Client: the Go client of the admin API, one method per endpoint.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

// Client calls an admin API. Its methods are safe for concurrent use. ctx bounds each call; a
// mutating call with a deadline asks the server to give up a little before it (?timeout=), so that
// the server's timeout error, not a cut connection, tells what happened. Error replies are
// returned as *Error.
type Client struct {
	base  string // http://host:port
	token string
	http  *http.Client
}

// maxReply caps the replies the client reads.
const maxReply = 64 << 20

// NewClient makes a client of the admin API at addr ("127.0.0.1:9090", or a URL
// "http://host:port"); token is the bearer token ("" for none).
func NewClient(addr, token string) *Client {
	base := strings.TrimRight(addr, "/")
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	return &Client{base: base, token: token, http: &http.Client{
		Transport: &http.Transport{Proxy: nil, MaxIdleConns: 4, IdleConnTimeout: 30 * time.Second},
		// The API never redirects; a redirect would carry the token elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// CloseIdleConnections closes the client's idle keep-alive connections.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// do sends a request and decodes a 2xx reply into out (nil: ignored).
func (c *Client) do(ctx context.Context, method, path string, query url.Values, body any, out any) error {
	var rd io.Reader
	if body != nil {
		var data []byte
		if raw, ok := body.(json.RawMessage); ok {
			data = raw
		} else {
			var err error
			if data, err = json.Marshal(body); err != nil {
				return fmt.Errorf("admin: %s %s: %w", method, path, err)
			}
		}
		rd = bytes.NewReader(data)
	}
	if method != http.MethodGet {
		if dl, ok := ctx.Deadline(); ok {
			left := time.Until(dl)
			left -= min(time.Second, left/10)
			if left > time.Millisecond {
				if query == nil {
					query = url.Values{}
				}
				query.Set("timeout", left.Round(time.Millisecond).String())
			}
		}
	}
	u := c.base + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return fmt.Errorf("admin: %w", err)
	}
	if method == http.MethodPost || method == http.MethodPatch {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("admin: %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxReply))
	if err != nil {
		return fmt.Errorf("admin: %s %s: reading the reply: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		return replyError(resp.StatusCode, data, out)
	}
	if out == nil {
		return nil
	}
	if raw, ok := out.(*[]byte); ok {
		*raw = data
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("admin: %s %s: decoding the reply: %w", method, path, err)
	}
	return nil
}

// replyError decodes an error reply. A Health reply (503 from /healthz and /readyz) is decoded
// into out instead, and is not an error.
func replyError(status int, data []byte, out any) error {
	if h, ok := out.(*Health); ok && status == http.StatusServiceUnavailable {
		if err := json.Unmarshal(data, h); err == nil && !h.OK && len(h.Problems) > 0 {
			return nil
		}
	}
	var er errorReply
	if err := json.Unmarshal(data, &er); err == nil && er.Error != nil && er.Error.Code != "" {
		er.Error.Status = status
		return er.Error
	}
	msg := strings.TrimSpace(string(data))
	if len(msg) > 200 {
		msg = msg[:200] + "…"
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Status: status, Code: codeForStatus(status), Message: msg}
}

func tunnelPath(name string) string { return "/v1/tunnels/" + url.PathEscape(name) }

// Status is GET /v1/status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var out Status
	return out, c.do(ctx, http.MethodGet, "/v1/status", nil, nil, &out)
}

// Tunnels is GET /v1/tunnels: the engine's tunnels, sorted by name.
func (c *Client) Tunnels(ctx context.Context) ([]Tunnel, error) {
	var out []Tunnel
	return out, c.do(ctx, http.MethodGet, "/v1/tunnels", nil, nil, &out)
}

// Tunnel is GET /v1/tunnels/{name}.
func (c *Client) Tunnel(ctx context.Context, name string) (Tunnel, error) {
	var out Tunnel
	return out, c.do(ctx, http.MethodGet, tunnelPath(name), nil, nil, &out)
}

// OpenTunnel is POST /v1/tunnels: it opens a tunnel as spec says (as a config file's tunnel) and
// returns once it is Up.
func (c *Client) OpenTunnel(ctx context.Context, spec engine.TunnelSpec) (Tunnel, error) {
	data, err := encodeTunnelSpec(spec)
	if err != nil {
		return Tunnel{}, fmt.Errorf("admin: %w", err)
	}
	return c.OpenTunnelJSON(ctx, data)
}

// OpenTunnelJSON is POST /v1/tunnels with a spec already in JSON (the config file's field names).
func (c *Client) OpenTunnelJSON(ctx context.Context, spec []byte) (Tunnel, error) {
	var out Tunnel
	return out, c.do(ctx, http.MethodPost, "/v1/tunnels", nil, json.RawMessage(spec), &out)
}

// CloseTunnel is DELETE /v1/tunnels/{name}: it drains the tunnel for drain (0: no drain; negative:
// the tunnel's drain_timeout) and returns once it has closed.
func (c *Client) CloseTunnel(ctx context.Context, name string, drain time.Duration) error {
	var q url.Values
	if drain >= 0 {
		q = url.Values{"drain": {drain.String()}}
	}
	return c.do(ctx, http.MethodDelete, tunnelPath(name), q, nil, nil)
}

// SwitchTunnel is POST /v1/tunnels/{name}/switch: it moves the tunnel to exit, make-before-break
// (the old session drains for drain; negative: the tunnel's drain_timeout), and returns the
// tunnel once new connections go to the new exit.
func (c *Client) SwitchTunnel(ctx context.Context, name, exit string, drain time.Duration) (Tunnel, error) {
	req := SwitchRequest{Exit: exit}
	if drain >= 0 {
		req.Drain = drain.String()
	}
	var out Tunnel
	return out, c.do(ctx, http.MethodPost, tunnelPath(name)+"/switch", nil, req, &out)
}

// ReconnectTunnel is POST /v1/tunnels/{name}/reconnect: it renews the tunnel's session with the
// same exit and returns the tunnel once it is Up again.
func (c *Client) ReconnectTunnel(ctx context.Context, name string) (Tunnel, error) {
	var out Tunnel
	return out, c.do(ctx, http.MethodPost, tunnelPath(name)+"/reconnect", nil, struct{}{}, &out)
}

// Connections is GET /v1/connections: the active connections of tunnel ("" for every tunnel and
// pool slot).
func (c *Client) Connections(ctx context.Context, tunnel string) ([]Connection, error) {
	var q url.Values
	if tunnel != "" {
		q = url.Values{"tunnel": {tunnel}}
	}
	var out []Connection
	return out, c.do(ctx, http.MethodGet, "/v1/connections", q, nil, &out)
}

// Exits is GET /v1/exits: the exit directory.
func (c *Client) Exits(ctx context.Context) ([]Exit, error) {
	var out []Exit
	return out, c.do(ctx, http.MethodGet, "/v1/exits", nil, nil, &out)
}

// Pool is GET /v1/pool.
func (c *Client) Pool(ctx context.Context) (Pool, error) {
	var out Pool
	return out, c.do(ctx, http.MethodGet, "/v1/pool", nil, nil, &out)
}

// ResizePool is PATCH /v1/pool {"size": N}: it returns the pool once new slots are placed and
// removed ones closed.
func (c *Client) ResizePool(ctx context.Context, size int) (Pool, error) {
	var out Pool
	return out, c.do(ctx, http.MethodPatch, "/v1/pool", nil, ResizeRequest{Size: &size}, &out)
}

// RotatePool is POST /v1/pool/rotate: it rotates the slots given (none: every slot that is up)
// and returns once they have moved or failed to.
func (c *Client) RotatePool(ctx context.Context, slots ...int) (RotateResult, error) {
	var out RotateResult
	return out, c.do(ctx, http.MethodPost, "/v1/pool/rotate", nil, RotateRequest{Slots: slots}, &out)
}

// ExitSessions is GET /v1/exit/sessions.
func (c *Client) ExitSessions(ctx context.Context) (ExitSessions, error) {
	var out ExitSessions
	return out, c.do(ctx, http.MethodGet, "/v1/exit/sessions", nil, nil, &out)
}

// DrainExit is POST /v1/exit/drain: it returns once the exit has drained and stopped.
func (c *Client) DrainExit(ctx context.Context) (ExitState, error) {
	var out ExitState
	return out, c.do(ctx, http.MethodPost, "/v1/exit/drain", nil, struct{}{}, &out)
}

// Reload is POST /v1/reload.
func (c *Client) Reload(ctx context.Context) (ReloadResult, error) {
	var out ReloadResult
	return out, c.do(ctx, http.MethodPost, "/v1/reload", nil, struct{}{}, &out)
}

// Healthz is GET /healthz. A failing check is not an error: Health.OK is false and Problems say why.
func (c *Client) Healthz(ctx context.Context) (Health, error) {
	var out Health
	return out, c.do(ctx, http.MethodGet, "/healthz", nil, nil, &out)
}

// Readyz is GET /readyz. Not being ready is not an error: Health.OK is false and Problems say why.
func (c *Client) Readyz(ctx context.Context) (Health, error) {
	var out Health
	return out, c.do(ctx, http.MethodGet, "/readyz", nil, nil, &out)
}

// Metrics is GET /metrics: the Prometheus text exposition.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	var out []byte
	return out, c.do(ctx, http.MethodGet, "/metrics", nil, nil, &out)
}
