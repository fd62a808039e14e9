package messages

import "time"

// SlotState names a state of a pool slot (docs/pool.md).
type SlotState string

// Slot states.
const (
	SlotWaiting   SlotState = "waiting"   // no exit to place it on (none eligible, or its last attempt failed): it waits for the directory
	SlotOpening   SlotState = "opening"   // its tunnel is coming up on the chosen exit
	SlotUp        SlotState = "up"        // its tunnel is Up; its ports carry traffic
	SlotMoving    SlotState = "moving"    // its tunnel switches to another exit, make-before-break
	SlotReplacing SlotState = "replacing" // its tunnel could not switch (its exit is lost): closed, and opened again on the same ports
	SlotClosing   SlotState = "closing"   // removed (pool closed or shrunk): its tunnel drains and closes
)

// SlotStateChanged is emitted on every transition of a pool slot.
type SlotStateChanged struct {
	Pool     string
	Slot     int
	TunnelID string
	ExitID   string // the exit it is on (or moving to)
	From, To SlotState
	Cause    string
	At       time.Time
}
