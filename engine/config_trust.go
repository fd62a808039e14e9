package engine

// Trust on a shared NATS bus, as configured: operators, certificates, and the pins every tunnel
// needs there (docs/security.md).

import (
	"fmt"
	"time"

	"github.com/warren-tunnel/warren/actors"
	"github.com/warren-tunnel/warren/signaling"
)

// shared reports whether others may reach this engine's NATS bus: configured servers, or an
// embedded server that listens. A private bus (the embedded server reached in-process only) has no
// one else on it.
func (n NATSConfig) shared() bool { return len(n.URLs) > 0 || n.EmbeddedListen != "" }

// Shared reports whether other engines may reach this bus (nats.urls, or an embedded server with a
// listener): then trust decides which exits answer.
func (n NATSConfig) Shared() bool { return n.shared() }

func (t TrustConfig) validate(identity string) error {
	for i, op := range t.Operators {
		if err := signaling.ValidIdentity(op); err != nil {
			return fieldErr(fmt.Sprintf("trust.operators[%d]", i), "%v", err)
		}
	}
	if t.Certificate == "" {
		return nil
	}
	if identity == "" {
		return fieldErr("trust.certificate", "needs identity: a certificate certifies one identity, and without one the engine makes a fresh one at every start")
	}
	c, err := signaling.DecodeCertificate(t.Certificate, time.Now())
	if err != nil {
		return fieldErr("trust.certificate", "%v", err)
	}
	id, _ := signaling.ParseIdentity(identity) // checked before
	if c.Kind != signaling.CertClient || c.Identity != id.ID() {
		return fieldErr("trust.certificate", "must be a client certificate for this engine's identity")
	}
	return nil
}

func checkExitCert(cert, exitID, identity string) error {
	if identity == "" {
		return fieldErr("exit.certificate", "needs identity: a certificate certifies one identity, and without one the engine makes a fresh one at every start")
	}
	c, err := signaling.DecodeCertificate(cert, time.Now())
	if err != nil {
		return fieldErr("exit.certificate", "%v", err)
	}
	id, _ := signaling.ParseIdentity(identity) // checked before
	switch {
	case c.Kind != signaling.CertExit:
		return fieldErr("exit.certificate", "a %s certificate, not an exit certificate", c.Kind)
	case c.ID != exitID:
		return fieldErr("exit.certificate", "certifies exit %q, not %q", c.ID, exitID)
	case c.Identity != id.ID():
		return fieldErr("exit.certificate", "certifies another identity than this engine's")
	}
	return nil
}

// checkTunnelTrust: on a shared bus, every exit of a tunnel must be pinned or operator-certified,
// unless the config trusts any exit explicitly.
func (c *Config) checkTunnelTrust(t *TunnelSpec, path string) error {
	for id, pin := range t.Pins {
		if err := signaling.ValidIdentity(pin); err != nil {
			return fieldErr(path+".pins."+echoValue(id), "%w", err)
		}
	}
	return checkSpecTrust(c.NATS, c.Trust, t, path)
}

func checkSpecTrust(n NATSConfig, tr TrustConfig, t *TunnelSpec, path string) error {
	if !n.shared() || tr.AnyExit || len(tr.Operators) > 0 {
		return nil
	}
	for _, id := range append([]string{t.Exit}, t.Exits...) {
		if _, ok := t.Pins[id]; !ok && !actors.IsWireGuardExit(id) { // a WireGuard exit is not on the bus
			return fieldErr(path+".pins", "exit %q is not pinned: on a shared NATS bus name its identity here, trust an operator that certifies it (trust.operators), or set trust.any_exit", id)
		}
	}
	return nil
}
