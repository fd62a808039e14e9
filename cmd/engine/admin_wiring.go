package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"time"

	"github.com/warren-tunnel/warren/admin"
	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/pool"
)

// adminOff turns the admin listener off (admin.listen: off).
const adminOff = "off"

// adminConfigOf is the admin listener `engine run` serves: admin.listen, by default
// 127.0.0.1:9090; "off" serves none (nil).
func adminConfigOf(c *admin.Config) *admin.Config {
	out := admin.Config{}
	if c != nil {
		out = *c
	}
	switch out.Listen {
	case adminOff:
		return nil
	case "":
		out.Listen = admin.DefaultListen
	}
	return &out
}

// startAdmin starts the node's admin listener (nil for none); an address in use or a missing token
// fails with an error that names admin.listen or admin.token.
func (n *node) startAdmin(c *admin.Config) (*admin.Server, error) {
	if c == nil {
		return nil, nil
	}
	srv, err := admin.New(*c, admin.Options{
		Engine: n.eng,
		Pool:   func() *pool.Pool { return n.pool.Load() },
		Reload: func(ctx context.Context) (admin.ReloadResult, error) {
			if n.path == "" {
				return admin.ReloadResult{}, &admin.Error{Status: http.StatusNotImplemented, Code: admin.CodeNotImplemented, Message: errNoConfigFile.Error()}
			}
			return n.requestReload(ctx)
		},
		Configured: func() []string { return slices.Clone(*n.configured.Load()) },
		Version:    messages.SoftwareVersion,
		Logger:     n.logger,
	})
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err // names admin.listen
	}
	return srv, nil
}

// configuredNames are the names of the configured tunnels (/readyz waits for them).
func (n *node) configuredNames() []string {
	names := make([]string, 0, len(n.cur.Tunnels))
	for i, s := range n.cur.Tunnels {
		names = append(names, tunnelName(s, i))
	}
	return names
}

// closeAdmin stops the admin listener after the engine has closed (its handlers then answer
// unavailable), waiting at most 5 s for requests in flight.
func closeAdmin(srv *admin.Server) {
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Close(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "engine: admin: %v\n", err)
	}
}
