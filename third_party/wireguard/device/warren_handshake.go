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

// InitiateHandshakes sends every peer a handshake initiation, even if one went out less than
// RekeyTimeout ago (SendHandshakeInitiation would skip it): a probe that must see the server
// answer within its own timeout cannot wait for WireGuard's next retry. The keys in use stay valid
// until the new ones are confirmed.
//
// The responder drops an initiation that follows the previous one too closely: its timestamp,
// whitened to 2^24 ns, is no newer (a "replay"), or it is consumed within HandshakeInitationRate of
// the previous one (a flood); and once a new one is sent, this side discards the answer to the
// one before. The handshake would then wait for the retry after RekeyTimeout. So a peer whose
// initiation went out less than pending ago and is not answered yet is left to it (its answer
// proves as much), and otherwise the new one goes out no sooner than minInitiationGap after the
// last (waiting for that within ctx). Adding a peer with a persistent keepalive sends an initiation
// at once, right before a first probe.
func (device *Device) InitiateHandshakes(ctx context.Context, pending time.Duration) {
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
		peer.handshake.mutex.RLock()
		last, state := peer.handshake.lastSentHandshake, peer.handshake.state
		peer.handshake.mutex.RUnlock()
		if state == handshakeInitiationCreated && time.Since(last) < pending {
			continue
		}
		if wait := minInitiationGap - time.Since(last); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return
			}
		}
		peer.handshake.mutex.Lock()
		peer.handshake.lastSentHandshake = time.Time{}
		peer.handshake.mutex.Unlock()
		_ = peer.SendHandshakeInitiation(false)
	}
}

// minInitiationGap spaces a forced initiation from the one before: more than the timestamp's
// whitening (2^24 ns) and HandshakeInitationRate (20 ms), with room for the responder's
// scheduling.
const minInitiationGap = 50 * time.Millisecond
