package device

// Warren: Traffic, ReceivedByPeer and LastHandshake read the peers' counters without formatting
// the IPC dump, for health checks that run every second on every tunnel, an exit's sweep of silent
// sessions, and a tunnel's status.

import (
	"sync/atomic"
	"time"
)

// cookieReplies counts the cookie replies every device of the process sent (SendHandshakeCookie).
var cookieReplies atomic.Uint64

// CookieRepliesSent is the number of handshake messages (initiations, and responses) the process's
// devices answered with a cookie reply instead of processing them: under load (a device's handshake
// queue more than an eighth full, and for a second after), a message without a valid cookie MAC
// gets one, and its sender tries again only when its retransmission timer fires (REKEY_TIMEOUT,
// 5 s).
func CookieRepliesSent() uint64 { return cookieReplies.Load() }

// Traffic is the number of bytes received from all peers (rx_bytes in IpcGet, summed) and the
// number of packets read from the TUN for them: data the device had to send, as opposed to its
// own keepalives and handshake messages, which tx_bytes counts too.
func (device *Device) Traffic() (rxBytes, txPackets uint64) {
	device.peers.RLock()
	defer device.peers.RUnlock()
	for _, peer := range device.peers.keyMap {
		rxBytes += peer.rxBytes.Load()
		txPackets += peer.txPackets.Load()
	}
	return rxBytes, txPackets
}

// ReceivedByPeer calls f with each peer's public key and the bytes received from it (rx_bytes in
// IpcGet). f must not call back into the device.
func (device *Device) ReceivedByPeer(f func(key NoisePublicKey, rxBytes uint64)) {
	device.peers.RLock()
	defer device.peers.RUnlock()
	for key, peer := range device.peers.keyMap {
		f(key, peer.rxBytes.Load())
	}
}

// LastHandshake is the time of the most recent completed handshake with any peer
// (last_handshake_time in IpcGet; the zero time if none has completed). One atomic read: it takes
// no lock, so a caller never waits on a peer being added or removed.
func (device *Device) LastHandshake() time.Time {
	last := device.lastHandshakeNano.Load()
	if last == 0 {
		return time.Time{}
	}
	return time.Unix(0, last)
}
