package admin_test

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/internal/testutil"
	"github.com/warren-tunnel/warren/pool"
)

// parsePage parses a status page and checks what every page must be: HTML5 with a viewport and a
// refresh, styled inline, with no script, no external resource and no event handler.
func parsePage(t *testing.T, body []byte) *html.Node {
	t.Helper()
	doc, err := html.Parse(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if doc.FirstChild == nil || doc.FirstChild.Type != html.DoctypeNode || doc.FirstChild.Data != "html" {
		t.Fatal("no <!DOCTYPE html>")
	}
	var viewport, refresh, style bool
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.DataAtom {
		case atom.Script, atom.Link, atom.Img, atom.Iframe, atom.Object, atom.Embed, atom.Form, atom.Base:
			t.Errorf("<%s> in the page", n.Data)
		case atom.Meta:
			if attr(n, "name") == "viewport" && strings.Contains(attr(n, "content"), "width=device-width") {
				viewport = true
			}
			if attr(n, "http-equiv") == "refresh" && attr(n, "content") != "" {
				refresh = true
			}
		case atom.Style:
			style = true
		}
		for _, a := range n.Attr {
			if strings.HasPrefix(a.Key, "on") || a.Key == "src" || a.Key == "href" || a.Key == "srcset" {
				t.Errorf("<%s %s=%q> in the page", n.Data, a.Key, a.Val)
			}
		}
	})
	if !viewport || !refresh || !style {
		t.Errorf("viewport %v, refresh %v, inline style %v", viewport, refresh, style)
	}
	return doc
}

func walk(n *html.Node, f func(*html.Node)) {
	f(n)
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

// text is the page's text content.
func text(n *html.Node) string {
	var b strings.Builder
	walk(n, func(n *html.Node) {
		if n.Type == html.TextNode && (n.Parent == nil || n.Parent.DataAtom != atom.Style) {
			b.WriteString(n.Data)
			b.WriteString(" ")
		}
	})
	return strings.Join(strings.Fields(b.String()), " ")
}

// tables returns the rows (cells' text) of each table, by the text of the heading before it.
func tables(doc *html.Node) map[string][][]string {
	out := map[string][][]string{}
	heading := ""
	walk(doc, func(n *html.Node) {
		if n.Type != html.ElementNode {
			return
		}
		switch n.DataAtom {
		case atom.H2:
			heading = text(n)
		case atom.Tr:
			var row []string
			for c := n.FirstChild; c != nil; c = c.NextSibling {
				if c.Type == html.ElementNode && c.DataAtom == atom.Td {
					row = append(row, text(c))
				}
			}
			if row != nil {
				out[heading] = append(out[heading], row)
			}
		}
	})
	return out
}

// TestStatusPage: GET / on an engine with an exit, a tunnel (with connections through it) and a
// pool: the page lists the tunnel with its state, exit and connections, the pool's slots and the
// exit directory, and is a page a phone can show.
func TestStatusPage(t *testing.T) {
	eng := startEngine(t, "x", nil)
	p := openPool(t, eng, 2, nil)
	e := serve(t, eng, admin.Config{}, admin.Options{Pool: func() *pool.Pool { return p }})
	tun := decodeReply[admin.Tunnel](t, e.do("POST", "/v1/tunnels", tunnelJSON("web-tunnel", "x")), http.StatusCreated)
	echo := testutil.EchoServer(t)
	for i := range 3 {
		socksEcho(t, tun.SOCKS, echo.Addr(), testutil.PayloadBytes(uint64(i), 2048))
	}
	testutil.Poll(t, 10*time.Second, "the connections to end", func(ctx context.Context) (admin.Tunnel, error) {
		return e.c.Tunnel(ctx, "web-tunnel")
	}, func(v admin.Tunnel) bool { return v.Connections.Active == 0 && v.Connections.Ended == 3 })
	r := e.do("GET", "/", "")
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", r.status, r.header.Get("Content-Type"))
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	doc := parsePage(t, r.body)
	all := text(doc)
	for _, want := range []string{"Warren v-test", "role exit+client", "ready", "Exit x", "serving"} {
		if !strings.Contains(all, want) {
			t.Errorf("page lacks %q: %s", want, all)
		}
	}
	tabs := tables(doc)
	rows := tabs["Tunnels"]
	if len(rows) != 1 || rows[0][0] != "web-tunnel" || !strings.HasPrefix(rows[0][1], "up") || rows[0][2] != "x" || rows[0][4] != "0" || rows[0][5] != "3" ||
		rows[0][7] != "6.0 KiB / 6.0 KiB" || !strings.Contains(rows[0][8], "incoming: normal 3") || !strings.Contains(rows[0][9], tun.SOCKS) {
		t.Errorf("tunnel rows: %q", rows)
	}
	if rows := tabs["Pool pool"]; len(rows) != 2 || rows[0][0] != "0" || !strings.HasPrefix(rows[0][1], "up") || rows[1][2] != "x" {
		t.Errorf("slot rows: %q", rows)
	}
	if rows := tabs["Exit directory"]; len(rows) != 1 || !strings.HasPrefix(rows[0][0], "x") || rows[0][1] != "serving" {
		t.Errorf("exit rows: %q", rows)
	}
	// HEAD works too (a browser's or a checker's).
	if r := e.do("HEAD", "/", ""); r.status != http.StatusOK {
		t.Errorf("HEAD /: %d", r.status)
	}
}
