package device

// Warren: InitiateHandshakes and AwaitHandshake let a client prove that a standard WireGuard
// server answers (the first handshake of a tunnel to it, and its health probes), by waiting for
// the event rather than polling LastHandshake.

import (
	"context"
	"sync"
	"time"
)

// handshakeSignal wakes AwaitHandshake callers when a handshake completes.
type handshakeSignal struct {
	mu sync.Mutex
	ch chan struct{} // closed on the next completed handshake; nil while nobody waits
}

// completed is called by timersHandshakeComplete after lastHandshakeNano was stored.
func (s *handshakeSignal) completed() {
	s.mu.Lock()
	if s.ch != nil {
		close(s.ch)
		s.ch = nil
	}
	s.mu.Unlock()
}

// AwaitHandshake returns nil once a handshake with any peer has completed after the time after
// (at once if one already has), or ctx's error when it ends first.
func (device *Device) AwaitHandshake(ctx context.Context, after time.Time) error {
	s := &device.handshakeSignal
	for {
		s.mu.Lock()
		if device.lastHandshakeNano.Load() > after.UnixNano() {
			s.mu.Unlock()
			return nil
		}
		if s.ch == nil {
			s.ch = make(chan struct{})
		}
		ch := s.ch
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// initiationSpacing: an initiation that went out less than this ago is not followed by another.
// The responder would drop the second — as a flood (within HandshakeInitationRate, 20 ms, of the
// first) or a replay (its TAI64N timestamp, whitened to 2^24 ns, no newer) — and the initiator's
// handshake state has moved on to it, so that the answer to the first is discarded too ("invalid
// response message"): the handshake would wait for WireGuard's retry, RekeyTimeout (5 s) later.
// A peer with persistent keepalive sends its first initiation as it starts, just before a leg's
// first probe.
const initiationSpacing = 50 * time.Millisecond

// InitiateHandshakes sends every peer a handshake initiation now, even if one went out less than
// RekeyTimeout ago (SendHandshakeInitiation would skip it): a probe that must see the server
// answer within its own timeout cannot wait for WireGuard's next retry. The responder accepts it
// (its timestamp is newer); the keys in use stay valid until the new ones are confirmed. A peer
// whose last initiation went out less than initiationSpacing ago gets none. It returns the time
// after which a completed handshake answers an initiation of this call or that one: the caller's
// AwaitHandshake waits from it.
func (device *Device) InitiateHandshakes() time.Time {
	since := time.Now()
	device.peers.RLock()
	peers := make([]*Peer, 0, len(device.peers.keyMap))
	for _, peer := range device.peers.keyMap {
		peers = append(peers, peer)
	}
	device.peers.RUnlock()
	for _, peer := range peers {
		if !peer.isRunning.Load() {
			continue
		}
		peer.handshake.mutex.Lock()
		if sent := peer.handshake.lastSentHandshake; time.Since(sent) < initiationSpacing {
			peer.handshake.mutex.Unlock()
			if sent.Before(since) { // answered already, or soon: a second would be dropped
				since = sent
			}
			continue
		}
		peer.handshake.lastSentHandshake = time.Time{}
		peer.handshake.mutex.Unlock()
		_ = peer.SendHandshakeInitiation(false)
	}
	return since
}
