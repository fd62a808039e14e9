package messages

// ReplyCode is the outcome of a connect request through the tunnel. The values
// are those of SOCKS5 (RFC 1928 §6) so that a client-side SOCKS5 proxy can pass
// them through unchanged; the HTTP proxy maps them to status codes.
type ReplyCode byte

// Reply codes of the in-tunnel connect protocol.
const (
	ReplySucceeded           ReplyCode = 0x00
	ReplyGeneralFailure      ReplyCode = 0x01
	ReplyNotAllowed          ReplyCode = 0x02 // egress policy refused the destination
	ReplyNetworkUnreachable  ReplyCode = 0x03
	ReplyHostUnreachable     ReplyCode = 0x04 // includes name resolution failure
	ReplyConnectionRefused   ReplyCode = 0x05
	ReplyTTLExpired          ReplyCode = 0x06 // used for dial timeouts
	ReplyCommandNotSupported ReplyCode = 0x07
	ReplyAddressNotSupported ReplyCode = 0x08
)

// ReplyCodeNames names each reply code for logs and errors.
var ReplyCodeNames = map[ReplyCode]string{
	ReplySucceeded:           "succeeded",
	ReplyGeneralFailure:      "general failure",
	ReplyNotAllowed:          "not allowed by egress policy",
	ReplyNetworkUnreachable:  "network unreachable",
	ReplyHostUnreachable:     "host unreachable",
	ReplyConnectionRefused:   "connection refused",
	ReplyTTLExpired:          "timed out",
	ReplyCommandNotSupported: "command not supported",
	ReplyAddressNotSupported: "address type not supported",
}
