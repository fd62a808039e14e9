package test

import (
	"context"
	"testing"
	"time"

	"github.com/warren-tunnel/warren/engine"
)

// TestEngineCloseReleasesExitSessions: a client engine (its own NATS connection, no exit) that shuts
// down says goodbye for each tunnel, so the exit releases the sessions at once rather than keeping
// them until a timeout.
func TestEngineCloseReleasesExitSessions(t *testing.T) {
	exitEng := startExitEngine(t, "far", listenTCP)
	cfg := engine.Config{Logger: testLogger(), NATS: engine.NATSConfig{URLs: []string{exitEng.NATSURL()}}}
	trustTestBus(&cfg)
	client, err := engine.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.Start(ctx); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		openTunnel(t, client, "far")
	}
	opened := map[string]bool{}
	for len(opened) < 3 {
		select {
		case ev := <-exitEng.Events():
			if ev.Kind == engine.EventSessionOpened {
				opened[ev.Session] = true
			}
		case <-ctx.Done():
			t.Fatalf("only %d sessions opened", len(opened))
		}
	}
	if err := client.Close(ctx); err != nil {
		t.Fatal(err)
	}
	closedAt := time.Now()
	for len(opened) > 0 {
		select {
		case ev := <-exitEng.Events():
			if ev.Kind == engine.EventSessionClosed {
				delete(opened, ev.Session)
			}
		case <-ctx.Done():
			t.Fatalf("%d sessions still held by the exit after the client closed", len(opened))
		}
	}
	// Generous bound, only to show that no keepalive or handshake timeout was involved.
	if d := time.Since(closedAt); d > 2*time.Second {
		t.Fatalf("sessions released %v after the client closed", d)
	}
}
