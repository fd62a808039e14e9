package admin

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// TestPageEscapes: what comes from the bus (exit ids, labels, versions, endpoints) and from
// errors is shown as text, never as markup: a hostile label adds no element and no attribute.
func TestPageEscapes(t *testing.T) {
	const evil = `<script>alert(1)</script><img src=x onerror=alert(2)>"'&`
	now := time.Now()
	d := pageData{Refresh: 5, Now: now,
		Status: Status{Version: evil, Role: "exit+client", NATS: NATSStatus{URL: evil, LastError: evil},
			Exit:     &ExitState{ID: evil, Endpoint: evil, Serving: true},
			Problems: map[string]int64{evil: 1}},
		Ready: Health{Problems: []string{evil}},
		Tunnels: []pageTunnel{{Tunnel: Tunnel{Name: evil, State: evil, Cause: evil, Exit: evil, SOCKS: evil, HTTP: evil,
			Connections: ConnStats{Ends: map[string]map[string]uint64{evil: {evil: 1}}}}, Rate: -1}},
		Pool:  &Pool{Name: evil, SOCKSPorts: evil, States: StateCounts{ByState: map[string]int{evil: 1}}},
		Slots: []pageSlot{{Slot: Slot{State: evil, Exit: evil, TunnelState: evil, Cause: evil}, Rate: 10}},
		Exits: []Exit{{ID: evil, State: evil, Endpoint: evil, Labels: map[string]string{evil: evil, "region": evil},
			Version: evil, Seen: now}},
	}
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var texts int
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.DataAtom {
			case atom.Script, atom.Img:
				t.Errorf("hostile text became a <%s> element", n.Data)
			}
			for _, a := range n.Attr {
				if strings.HasPrefix(a.Key, "on") || a.Key == "src" {
					t.Errorf("hostile text became an attribute %s=%q", a.Key, a.Val)
				}
			}
		}
		if n.Type == html.TextNode && strings.Contains(n.Data, "<script>alert(1)</script>") {
			texts++
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	// Each hostile value is shown, as text: in the title and in the body, over and over.
	if texts < 20 {
		t.Errorf("the hostile text shows as text %d times; want it in every place it was put", texts)
	}
	if strings.Contains(buf.String(), "<script>") {
		t.Error("raw <script> in the page")
	}
}

// TestRates: the page's throughput is the byte count's change between two views at least a
// second apart.
func TestRates(t *testing.T) {
	var r rates
	t0 := time.Now()
	if v := r.sample("a", 1000, t0); v != -1 {
		t.Fatalf("first sample: %v", v)
	}
	if v := r.sample("a", 1500, t0.Add(500*time.Millisecond)); v != -1 {
		t.Fatalf("sample too soon: %v", v)
	}
	if v := r.sample("a", 3000, t0.Add(2*time.Second)); v != 1000 {
		t.Fatalf("rate %v, want 1000", v)
	}
	if v := r.sample("a", 10, t0.Add(3*time.Second)); v != -1 {
		t.Fatalf("after a reset of the counter: %v", v)
	}
	r.prune(t0.Add(2 * time.Minute))
	if len(r.last) != 0 {
		t.Fatalf("pruned: %v", r.last)
	}
	for in, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 5 << 20: "5.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := humanBytes(in); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", in, got, want)
		}
	}
}
