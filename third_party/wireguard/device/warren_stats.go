package device

// Warren: Traffic reads the transfer counters without formatting the IPC dump, for health checks
// that run every second on every tunnel.

// Traffic is the number of bytes received from and sent to all peers (rx_bytes and tx_bytes in
// IpcGet, summed).
func (device *Device) Traffic() (rx, tx uint64) {
	device.peers.RLock()
	defer device.peers.RUnlock()
	for _, peer := range device.peers.keyMap {
		rx += peer.rxBytes.Load()
		tx += peer.txBytes.Load()
	}
	return rx, tx
}
