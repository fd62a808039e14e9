package signaling

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

func announcement(t *testing.T, id *Identity, now time.Time) *messages.ExitAnnouncement {
	t.Helper()
	a := &messages.ExitAnnouncement{ExitID: "exit-eu-1", Endpoint: "192.0.2.7:51820", Labels: map[string]string{"region": "eu", "tier": "a"},
		Capacity: 1000, Load: messages.ExitLoad{Sessions: 3, Flows: 9}, State: messages.ExitServing, Version: "v0.13.0", IntervalMS: 2000}
	id.SignExitAnnouncement(a, now)
	return a
}

func TestAnnouncementRoundTripAndTamper(t *testing.T) {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	a := announcement(t, id, now)
	data, err := Encode(messages.TypeExitAnnouncement, a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	b := got.(*messages.ExitAnnouncement)
	if err := VerifyExitAnnouncement(b, now); err != nil {
		t.Fatalf("genuine announcement: %v", err)
	}
	for name, tamper := range map[string]func(*messages.ExitAnnouncement){
		"label value": func(x *messages.ExitAnnouncement) { x.Labels["region"] = "us" },
		"label added": func(x *messages.ExitAnnouncement) { x.Labels["zz"] = "1" },
		"label moved": func(x *messages.ExitAnnouncement) {
			delete(x.Labels, "tier")
			x.Labels["region"] = "eu"
			x.Labels["tie"] = "ra"
		},
		"state":    func(x *messages.ExitAnnouncement) { x.State = messages.ExitDraining },
		"load":     func(x *messages.ExitAnnouncement) { x.Load.Sessions = 0 },
		"endpoint": func(x *messages.ExitAnnouncement) { x.Endpoint = "192.0.2.8:51820" },
		"interval": func(x *messages.ExitAnnouncement) { x.IntervalMS = 600000 },
	} {
		c := *b
		c.Labels = map[string]string{}
		for k, v := range b.Labels {
			c.Labels[k] = v
		}
		tamper(&c)
		if err := VerifyExitAnnouncement(&c, now); !errors.Is(err, ErrForbidden) {
			t.Errorf("%s tampered: %v, want ErrForbidden", name, err)
		}
	}
	if err := VerifyExitAnnouncement(b, now.Add(3*time.Minute)); !errors.Is(err, ErrForbidden) {
		t.Errorf("stale announcement: %v, want ErrForbidden", err)
	}
}

func TestAnnouncementValidation(t *testing.T) {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		mutate func(*messages.ExitAnnouncement)
		want   string
	}{
		"label key":    {func(a *messages.ExitAnnouncement) { a.Labels["Bad Key"] = "x" }, "label key"},
		"label value":  {func(a *messages.ExitAnnouncement) { a.Labels["region"] = "eu,us" }, "value"},
		"many labels":  {func(a *messages.ExitAnnouncement) { addLabels(a, 17) }, "limit 16"},
		"state":        {func(a *messages.ExitAnnouncement) { a.State = "asleep" }, "state"},
		"version":      {func(a *messages.ExitAnnouncement) { a.Version = "" }, "version"},
		"interval":     {func(a *messages.ExitAnnouncement) { a.IntervalMS = 1 }, "interval_ms"},
		"endpoint":     {func(a *messages.ExitAnnouncement) { a.Endpoint = "exit.example:1" }, "endpoint"},
		"negative":     {func(a *messages.ExitAnnouncement) { a.Load.Flows = -1 }, "negative"},
		"exit id":      {func(a *messages.ExitAnnouncement) { a.ExitID = "a.b" }, "id"},
		"certificate":  {func(a *messages.ExitAnnouncement) { a.Certificate = strings.Repeat("c", 1025) }, "cert"},
		"signer":       {func(a *messages.ExitAnnouncement) { a.Identity = "x" }, "identity"},
		"no signature": {func(a *messages.ExitAnnouncement) { a.Signature = "" }, "sig"},
	} {
		a := announcement(t, id, time.Now())
		c.mutate(a)
		data, err := Encode(messages.TypeExitAnnouncement, a)
		if err != nil {
			t.Fatal(err)
		}
		_, err = Decode(data)
		var we *WireError
		if !errors.As(err, &we) || we.Code != messages.ErrCodeBadRequest || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want bad_request naming %q", name, err, c.want)
		}
	}
}

func addLabels(a *messages.ExitAnnouncement, n int) {
	for i := range n {
		a.Labels["k"+strings.Repeat("x", i)] = "v"
	}
}

func TestSessionDrainingSigned(t *testing.T) {
	id, err := NewIdentity()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	d := &messages.SessionDraining{SessionID: strings.Repeat("cd", 16), ExitID: "exit-1", DrainMS: 30000}
	id.SignSessionDraining(d, now)
	data, err := Encode(messages.TypeSessionDraining, d)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifySessionDraining(got.(*messages.SessionDraining), now); err != nil {
		t.Fatalf("genuine: %v", err)
	}
	c := *d
	c.DrainMS = 1
	if err := VerifySessionDraining(&c, now); !errors.Is(err, ErrForbidden) {
		t.Errorf("tampered drain: %v, want ErrForbidden", err)
	}
	disc, err := Encode(messages.TypeExitsDiscover, &messages.ExitsDiscover{Nonce: "00"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Decode(disc); err == nil {
		t.Error("discover with a short nonce decoded")
	}
}
