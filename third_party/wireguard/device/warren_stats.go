package device

// Warren: Traffic reads the peers' counters without formatting the IPC dump, for health checks that
// run every second on every tunnel.

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
