// Package messages holds Warren's message types: wire messages exchanged over signaling and the commands, events and replies actors exchange in process.
//
// Naming: commands are imperative (OpenTunnel), events past tense (HandshakeCompleted), replies end in Response.
// The types carry no behaviour; validation lives in package signaling, handling in package actors.
package messages
