package actors

import (
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"runtime/debug"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
	"github.com/warren-tunnel/warren/third_party/wireguard/device"
)

// clientDevice sizes a client tunnel's device: one encryption, decryption and handshake worker
// each (an exit's device has one per CPU) and room for 64 handshake messages (upstream: 1,024).
// One peer needs no more; a worker per CPU per tunnel is most of a tunnel's goroutines on a big
// machine (docs/performance.md). Like an exit's, it reads no TUN events: the device actor brings
// it up (deviceActor.create) and a netstack.Stack's MTU is fixed. It holds at most
// clientMaxBuffers message buffers at once (9 KiB each): under load a reader waits for one to come
// back rather than queue without bound (upstream does the same on iOS and Android, with 1,024).
// Waiting there stalls only this tunnel, whose one peer is its own exit; should packets staged for
// a handshake that never completes hold them all, the health hub finds the data plane dead and the
// tunnel reconnects, and Device.Close lifts the cap before it waits for the readers.
//
// Its one worker of each kind only ever stood between a reader and the peer's sequential sender or
// receiver: every batch is sealed or opened by the goroutine that read it (InlineCrypto,
// third_party/wireguard/README.md change 10), one goroutine wake-up fewer per batch each way.
var clientDevice = device.DeviceOptions{Workers: 1, HandshakeQueue: 64, AdaptiveBatch: true, NoTUNEvents: true,
	MaxBuffers: clientMaxBuffers, InlineCrypto: math.MaxInt, InlineSend: true, InlineReceive: true}

// clientMaxBuffers: message buffers a tunnel's device may hold at once, 9 MiB.
const clientMaxBuffers = 1024

// exitDevice sizes an exit's device: upstream's workers and queues, the adaptive batch (its bind
// is netstack.Bind, which takes fewer buffers than its batch) and no TUN event reader. Its buffers
// are not capped: one device serves every client, and a client that let its session's keys expire
// while a flood through the exit is staged for it could otherwise hold the whole budget and stall
// every other session.
//
// Its bind's one receive loop reads every client's packets. On a machine of one or two CPUs it
// opens them itself, as a client's device does: there the workers add wake-ups, not parallelism
// (BenchmarkChain, docs/performance.md). With more CPUs only batches of up to inlineSmall packets
// (a handshake, a request, a quiet connection's ACKs) are: the workers open bulk traffic in
// parallel, many clients' at once. The CPUs are GOMAXPROCS when the package is initialised.
//
// Its handshake queue holds exitHandshakeQueue messages (upstream: 1,024). wireguard-go is under
// load once an eighth of it waits: it then answers initiations with cookie replies, and a client
// that gets one initiates again only 5 s later. A pool bringing up hundreds of tunnels at once is
// such a burst, from one address: at upstream's threshold of 128 (1,024 / 8), 400 tunnels opened
// at once made up to 731 cookie replies and took 7–12 s to come Up instead of 2
// (BenchmarkIdleTunnels, `cookies`). At 512 they made none. A flood of initiations can hold the
// whole queue, each with a 9 KiB buffer: 36 MiB.
var exitDevice = device.DeviceOptions{AdaptiveBatch: true, NoTUNEvents: true, InlineCrypto: exitInline(), InlineSend: true, InlineReceive: true, HandshakeQueue: exitHandshakeQueue}

// exitHandshakeQueue: handshake messages an exit's device queues for its workers (see exitDevice).
const exitHandshakeQueue = 4096

// inlineSmall is the largest batch an exit's device on more than two CPUs seals or opens inline.
const inlineSmall = 4

func exitInline() int {
	if runtime.GOMAXPROCS(0) <= 2 {
		return math.MaxInt
	}
	return inlineSmall
}

// stopOnFailure stops a child that panicked; it never restarts one (see package doc).
var stopOnFailure = actor.NewOneForOneStrategy(0, 0, func(reason interface{}) actor.Directive {
	return actor.StopDirective
})

func props(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer, actor.WithSupervisor(stopOnFailure),
		actor.WithReceiverMiddleware(recoverPanics, forgetEndedChildren), actor.WithSpawnFunc(spawnWith))
}

// forgetEndedChildren clears a parent's last reference to its children that have ended.
// protoactor's PIDSet.Remove (a parent's children, before the parent's Terminated for one) moves
// the last PID into the ended child's place and shortens the slice without clearing the slot it
// gives up. The ended child's PID stays in the slice's spare capacity, and a PID keeps its process,
// whose mailbox keeps the actor's context and the actor: for a tunnel, its netstack, device and
// connection actors (each with the gVisor endpoint that still refers to its last relay buffer). So a
// parent kept up to as many ended children as it once had at the same time, which ones depending
// on the order they ended, until later children took their slots: after bursts of 20 tunnels the
// engine actor held 7 to 11 closed ones, and the exit's device some of their peers and
// connections, about 2.3 MiB of live heap in all (TestTunnelChurnRetainsNothing). After each
// Terminated the spare capacity is cleared, all of it, so a Receive that panicked before the clear
// is made up for at the next one. It relies on Children() returning protoactor's own slice (true at
// the pinned commit); should that become a copy, the clear does nothing and
// TestTunnelChurnRetainsNothing fails.
func forgetEndedChildren(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
		next(c, env)
		if _, ok := env.Message.(*actor.Terminated); !ok {
			return
		}
		if ctx, ok := c.(actor.Context); ok {
			children := ctx.Children() // protoactor's own slice, not a copy
			clear(children[len(children):cap(children)])
		}
	}
}

// recoverPanics logs a panic in Receive at error level with its stack (protoactor logs it only at
// info). A panic while handling Stopping or Stopped is contained, so the rest of the release and the
// stop itself still complete; any other panic goes on to the supervisor, which stops the actor.
func recoverPanics(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
		defer func() {
			r := recover()
			if r == nil {
				return
			}
			c.Logger().Error("actor panicked", "actor", c.Self().String(), "message", fmt.Sprintf("%T", env.Message),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			switch env.Message.(type) {
			case *actor.Stopping, *actor.Stopped:
				return
			}
			panic(r)
		}()
		next(c, env)
	}
}

// endWith tells a child why its owner ends it: the child records why for everything it still holds,
// passes it on to its own children the same way, and stops itself once they have ended. The owner
// waits for the child's Terminated (bounded) before it stops itself, because a stop is a system
// message that would overtake this one in the child's mailbox.
type endWith struct{ why messages.EndReason }

// endChildren tells each of children why it ends and arms the bound on the owner's wait; the timer
// is the owner's, to stop in its Stopping.
func endChildren(ctx actor.Context, why messages.EndReason, children []*actor.PID) *time.Timer {
	for _, c := range children {
		ctx.Send(c, &endWith{why: why})
	}
	return sendAfter(ctx, childrenEndWait, &childrenEndExpired{})
}

// awaitChildren is the core of an owner's ending behavior: each Terminated may be its last child
// told endWith, and childrenEndExpired ends the wait; it reports whether the message was one of them.
func awaitChildren(ctx actor.Context, logger *slog.Logger) bool {
	switch ctx.Message().(type) {
	case *actor.Terminated:
		stopWhenEnded(ctx, logger, len(ctx.Children()), false)
	case *childrenEndExpired:
		stopWhenEnded(ctx, logger, len(ctx.Children()), true)
	default:
		return false
	}
	return true
}

// stopWhenEnded stops the owner once none of the children it told is left, or, past the bound
// (expired), with the rest still there.
func stopWhenEnded(ctx actor.Context, logger *slog.Logger, left int, expired bool) {
	switch {
	case left == 0:
	case expired:
		logger.Warn("children did not end in time; stopping anyway", "actor", ctx.Self().String(),
			"left", left, "waited", childrenEndWait)
	default:
		return
	}
	ctx.Stop(ctx.Self())
}

// emit sends an event towards the engine, which hands it to the embedding program.
func emit(ctx actor.Context, events *actor.PID, ev any) {
	if events != nil {
		ctx.Send(events, ev)
	}
}

func orDiscard(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}

// isEvent reports whether m is an event for the embedding program (messages package events).
func isEvent(m any) bool {
	switch m.(type) {
	case *messages.TunnelStateChanged, *messages.SessionOpened, *messages.SessionClosed, *messages.ChildLost, *messages.ActorPanicked,
		*messages.SlotStateChanged:
		return true
	}
	return false
}

// reenter is ctx.ReenterAfter with the panic handling of recoverPanics: a continuation runs outside
// the receiver middleware, so a panic there would reach the supervisor without an error log or a
// stack. It is logged here, then goes on to the supervisor, which stops the actor.
func reenter(ctx actor.Context, f *actor.Future, cont func(res any, err error)) {
	ctx.ReenterAfter(f, func(res any, err error) {
		defer func() {
			if r := recover(); r != nil {
				ctx.Logger().Error("actor panicked in a continuation", "actor", ctx.Self().String(),
					"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				panic(r)
			}
		}()
		cont(res, err)
	})
}

// truncateUTF8 cuts s to at most n bytes on a character boundary, so that what is signed is what
// JSON carries.
func truncateUTF8(s string, n int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// NewProps is props for actors layered on the engine (pool/): a child that panics is stopped, never
// restarted, and the panic is logged with its stack.
func NewProps(producer actor.Producer) *actor.Props { return props(producer) }

// Reenter is reenter for actors layered on the engine: ctx.ReenterAfter whose continuation's panic
// is logged before it reaches the supervisor.
func Reenter(ctx actor.Context, f *actor.Future, cont func(res any, err error)) {
	reenter(ctx, f, cont)
}
