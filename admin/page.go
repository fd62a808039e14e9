package admin

// The status page (GET /): one HTML page, no external assets, that refreshes itself.

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"
	"html/template"
	"net/http"
	"sync"
	"time"
)

//go:embed page.html
var pageHTML string

// refreshSeconds is how often the page reloads itself.
const refreshSeconds = 5

var pageTemplate = template.Must(template.New("page").Funcs(template.FuncMap{
	"bytes":    humanBytes,
	"rate":     humanRate,
	"duration": humanSeconds,
	"ago":      func(t time.Time) string { return humanSeconds(seconds(time.Since(t))) },
}).Parse(pageHTML))

// pageData is what the page shows.
type pageData struct {
	Refresh  int
	Now      time.Time
	Status   Status
	Err      string // the status could not be read
	Ready    Health
	Tunnels  []pageTunnel
	Pool     *Pool
	Slots    []pageSlot
	Exits    []Exit
	ExitsErr string
}

type pageTunnel struct {
	Tunnel
	Rate float64 // bytes per second since the previous view (-1: not known yet)
}

type pageSlot struct {
	Slot
	Rate float64
}

func (s *Server) page(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := reading(r)
	defer cancel()
	d := s.pageData(ctx)
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, d); err != nil {
		return fmt.Errorf("status page: %w", err)
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
	return nil
}

func (s *Server) pageData(ctx context.Context) pageData {
	d := pageData{Refresh: refreshSeconds, Now: time.Now()}
	st, err := s.collectStatus(ctx)
	d.Status = st
	if err != nil {
		d.Err = err.Error()
		return d
	}
	d.Ready = Health{OK: true}
	if problems := s.readiness(ctx); len(problems) > 0 {
		d.Ready = Health{Problems: problems}
	}
	if ts, err := s.eng.Tunnels(ctx); err == nil {
		if snaps, err := snapTunnels(ctx, ts, true); err == nil {
			for _, sn := range snaps {
				v := tunnelView(sn.info, sn.stats, d.Now)
				d.Tunnels = append(d.Tunnels, pageTunnel{Tunnel: v,
					Rate: s.rates.sample("t/"+v.Name, v.Connections.BytesIn+v.Connections.BytesOut, d.Now)})
			}
		}
	}
	if p := s.pool(); p != nil {
		if slots, err := p.Slots(ctx); err == nil {
			v := poolView(p, slots, d.Now)
			d.Pool = &v
			for _, sl := range v.Slots {
				d.Slots = append(d.Slots, pageSlot{Slot: sl,
					Rate: s.rates.sample(fmt.Sprintf("s/%d/%s", sl.Index, sl.Tunnel), sl.Connections.BytesIn+sl.Connections.BytesOut, d.Now)})
			}
		}
	}
	s.rates.prune(d.Now)
	if es, err := s.eng.Exits(ctx); err != nil {
		d.ExitsErr = err.Error()
	} else {
		for _, e := range es {
			d.Exits = append(d.Exits, exitView(e))
		}
	}
	return d
}

// rates remembers each tunnel's byte count at its previous view, for the page's throughput. It
// holds only what the newest views showed (pruned after rateKeep).
type rates struct {
	mu   sync.Mutex
	last map[string]rateSample
}

type rateSample struct {
	at    time.Time
	bytes int64
}

const (
	rateMin  = time.Second // samples closer than this are not compared (two viewers at once)
	rateKeep = time.Minute
)

// sample records bytes for key and returns the rate since the previous sample (-1: none yet).
func (r *rates) sample(key string, bytes int64, now time.Time) float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.last == nil {
		r.last = map[string]rateSample{}
	}
	prev, ok := r.last[key]
	if ok && now.Sub(prev.at) < rateMin {
		return -1
	}
	r.last[key] = rateSample{at: now, bytes: bytes}
	if !ok || now.Sub(prev.at) > rateKeep || bytes < prev.bytes {
		return -1
	}
	return float64(bytes-prev.bytes) / now.Sub(prev.at).Seconds()
}

func (r *rates) prune(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, v := range r.last {
		if now.Sub(v.at) > rateKeep {
			delete(r.last, k)
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func humanRate(r float64) string {
	if r < 0 {
		return "–"
	}
	return humanBytes(int64(r)) + "/s"
}

func humanSeconds(s float64) string {
	d := time.Duration(s * float64(time.Second))
	switch {
	case d <= 0:
		return "–"
	case d < time.Minute:
		return d.Round(time.Second).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	case d < 48*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}
