// Package signaling carries Warren's control messages over NATS: subjects, a strict size-capped codec, validation, identities and the embedded server.
package signaling
