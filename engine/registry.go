package engine

import (
	"github.com/asynkron/protoactor-go/actor"
	cmap "github.com/orcaman/concurrent-map"
)

// registryBuckets is how many concurrent maps (of 32 shards each) hold the engine's local PIDs.
const registryBuckets = 1

// compactRegistry replaces the actor system's process registry, before anything is spawned, by
// one of registryBuckets concurrent maps. protoactor's own is 1024 of them, 32768 Go maps in all:
// 2.8 MB per engine before any actor runs, and each map keeps its first bucket group (288 bytes)
// once a PID has hashed to it, since Go maps never shrink. Every actor and every request's future
// takes a new PID, so that grew with the engine's age, not its load — towards 9 MB more — and the
// groups, allocated one now and then among short-lived objects of their size, kept heap spans in
// use long after those were freed (docs/dependencies.md). An engine has at most tens of thousands
// of PIDs registered at once (its tunnels' and connections' actors, requests in flight): 32 Go
// maps hold them, and a registration or lookup locks one of them.
func compactRegistry(sys *actor.ActorSystem) {
	small := &actor.SliceMap{LocalPIDs: make([]cmap.ConcurrentMap, registryBuckets)}
	for i := range small.LocalPIDs {
		small.LocalPIDs[i] = cmap.New()
	}
	// Move the processes NewActorSystem registered (dead letters, the event stream). Items runs a
	// goroutine per shard: only for the few maps that hold anything.
	for _, m := range sys.ProcessRegistry.LocalPIDs.LocalPIDs {
		if m.Count() == 0 {
			continue
		}
		for id, p := range m.Items() {
			small.GetBucket(id).Set(id, p)
		}
	}
	sys.ProcessRegistry.LocalPIDs = small
}
