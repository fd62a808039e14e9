package actors

import (
	"log/slog"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/warren-tunnel/warren/messages"
)

// stopOnFailure stops a child that panicked; it never restarts one (see package doc).
var stopOnFailure = actor.NewOneForOneStrategy(0, 0, func(reason interface{}) actor.Directive {
	return actor.StopDirective
})

func props(producer actor.Producer) *actor.Props {
	return actor.PropsFromProducer(producer, actor.WithSupervisor(stopOnFailure))
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
	case *messages.TunnelStateChanged, *messages.SessionOpened, *messages.SessionClosed:
		return true
	}
	return false
}
