package actors

// Static peers of an exit: standard WireGuard clients configured on the exit, each a peer actor
// under the exit's device. The exit watches them: a static peer that stops while the exit serves
// (it panicked; its stop removed the WireGuard peer) is added again at once, with an error log and
// a child_lost event, so its client is not cut off until the process restarts.

import (
	"net/netip"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// addStatic adds sp to the device and watches its peer actor; done hears the outcome.
func (e *exitActor) addStatic(ctx actor.Context, sp StaticPeer, done func(error)) {
	var allowed []netip.Prefix
	for _, a := range sp.Addresses {
		allowed = append(allowed, netip.PrefixFrom(a, a.BitLen()))
	}
	f := ctx.RequestFuture(e.device, &addPeer{publicKey: sp.PublicKey, allowedIPs: allowed, sessionID: "static-" + sp.Name}, addPeerWait)
	reenter(ctx, f, func(res any, err error) {
		if e.stopped() {
			return
		}
		if r, ok := res.(*addPeerResponse); ok {
			if err = r.err; err == nil {
				e.static[sp.Name] = r.pid
				ctx.Watch(r.pid)
			}
		}
		done(err)
	})
}

func (e *exitActor) staticByPID(pid *actor.PID) (string, bool) {
	for name, p := range e.static {
		if p.Equal(pid) {
			return name, true
		}
	}
	return "", false
}

// staticLost re-adds a static peer whose actor stopped while the exit serves.
func (e *exitActor) staticLost(ctx actor.Context, name string) {
	delete(e.static, name)
	for _, sp := range e.cfg.StaticPeers {
		if sp.Name != name {
			continue
		}
		e.addStatic(ctx, sp, func(err error) {
			action := "re-added"
			if err != nil {
				action = "not re-added: " + err.Error()
			}
			e.cfg.Logger.Error("static peer stopped unexpectedly", "peer", name, "action", action)
			emit(ctx, e.cfg.Events, &messages.ChildLost{Parent: "exit " + e.cfg.ID, Child: "static peer " + name, Action: action, At: time.Now()})
		})
		return
	}
}

// stopped reports whether the exit is ending or stopping: continuations that arrive after endWith or
// Stopping (they are system messages) must not start anything.
func (e *exitActor) stopped() bool { return e.stopping }
