package signaling

// Exit discovery and drain on the wire: the signed bytes, verification and validation of
// ExitAnnouncement, ExitsDiscover and SessionDraining (docs/pool.md, docs/signaling.md).

import (
	"fmt"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/warren-tunnel/warren/messages"
)

var (
	labelKeyPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,31}$`)
	labelValuePattern = regexp.MustCompile(`^[A-Za-z0-9_.:/-]{0,64}$`)
	versionPattern    = regexp.MustCompile(`^[A-Za-z0-9_.+-]{1,64}$`)
)

// Bounds of an announced cadence.
const (
	MinAnnounceInterval = 50 * time.Millisecond
	MaxAnnounceInterval = 10 * time.Minute
)

// ValidLabel checks one label of an exit (as configured, and as announced): a key of 1-32 of
// [a-z0-9_.-] starting with a letter or digit, a value of 0-64 of [A-Za-z0-9_.:/-].
func ValidLabel(key, value string) error {
	if !labelKeyPattern.MatchString(key) {
		return fmt.Errorf("%w: label key %q must be 1-32 of a-z 0-9 _ . - (starting with a letter or digit)", ErrInvalid, truncate(key, 32))
	}
	if !labelValuePattern.MatchString(value) {
		return fmt.Errorf("%w: label %s: value %q must be 0-64 of A-Z a-z 0-9 _ . : / -", ErrInvalid, key, truncate(value, 64))
	}
	return nil
}

// ValidLabels checks a set of labels: at most messages.MaxExitLabels, each valid.
func ValidLabels(labels map[string]string) error {
	if len(labels) > messages.MaxExitLabels {
		return fmt.Errorf("%w: %d labels, limit %d", ErrInvalid, len(labels), messages.MaxExitLabels)
	}
	for k, v := range labels {
		if err := ValidLabel(k, v); err != nil {
			return err
		}
	}
	return nil
}

func validExitState(s string) error {
	switch s {
	case messages.ExitServing, messages.ExitDraining, messages.ExitLeaving:
		return nil
	}
	return fmt.Errorf("state %q: must be %s, %s or %s", truncate(s, 32), messages.ExitServing, messages.ExitDraining, messages.ExitLeaving)
}

func validateAnnouncement(a *messages.ExitAnnouncement) error {
	if _, err := netip.ParseAddrPort(a.Endpoint); err != nil {
		return fmt.Errorf("endpoint %q: not an IP:port", truncate(a.Endpoint, 64))
	}
	if err := ValidLabels(a.Labels); err != nil {
		return fmt.Errorf("labels: %w", err)
	}
	if a.Capacity < 0 || a.Load.Sessions < 0 || a.Load.Flows < 0 {
		return fmt.Errorf("capacity and load must not be negative")
	}
	if !versionPattern.MatchString(a.Version) {
		return fmt.Errorf("version %q: must be 1-%d of A-Z a-z 0-9 _ . + -", truncate(a.Version, 64), messages.MaxExitVersionLen)
	}
	iv := time.Duration(a.IntervalMS) * time.Millisecond
	if iv < MinAnnounceInterval || iv > MaxAnnounceInterval {
		return fmt.Errorf("interval_ms: %d not in [%d, %d]", a.IntervalMS, MinAnnounceInterval.Milliseconds(), MaxAnnounceInterval.Milliseconds())
	}
	return firstErr(ValidID(a.ExitID), validClientID(a.Identity), validCertField(a.Certificate), validExitState(a.State),
		positive("ts", a.Timestamp), validSignature(a.Signature))
}

func validateDraining(d *messages.SessionDraining) error {
	if d.DrainMS < 0 {
		return fmt.Errorf("drain_ms: must not be negative")
	}
	return firstErr(validSessionID(d.SessionID), ValidID(d.ExitID), validClientID(d.Signer), positive("ts", d.Timestamp), validSignature(d.Signature))
}

// Labels are signed as their count, then each key and value in key order.
func announcementSigningBytes(a *messages.ExitAnnouncement) []byte {
	keys := make([]string, 0, len(a.Labels))
	for k := range a.Labels {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	fields := []string{a.ExitID, a.Identity, a.Certificate, a.Endpoint, strconv.Itoa(len(keys))}
	for _, k := range keys {
		fields = append(fields, k, a.Labels[k])
	}
	fields = append(fields, strconv.Itoa(a.Capacity), strconv.Itoa(a.Load.Sessions), strconv.Itoa(a.Load.Flows), a.State, a.Version,
		strconv.FormatInt(a.IntervalMS, 10), strconv.FormatInt(a.Timestamp, 10))
	return signingBytes("warren-exit-announcement-v1", fields...)
}

func drainingSigningBytes(d *messages.SessionDraining) []byte {
	return signingBytes("warren-session-draining-v1", d.SessionID, d.ExitID, strconv.FormatInt(d.DrainMS, 10), d.Signer, strconv.FormatInt(d.Timestamp, 10))
}

// SignExitAnnouncement fills Identity, Timestamp and Signature.
func (id *Identity) SignExitAnnouncement(a *messages.ExitAnnouncement, now time.Time) {
	a.Identity = id.ID()
	a.Timestamp = now.UnixMilli()
	a.Signature = id.sign(announcementSigningBytes(a))
}

// SignSessionDraining fills Signer, Timestamp and Signature.
func (id *Identity) SignSessionDraining(d *messages.SessionDraining, now time.Time) {
	d.Signer = id.ID()
	d.Timestamp = now.UnixMilli()
	d.Signature = id.sign(drainingSigningBytes(d))
}

// VerifyExitAnnouncement checks the signature by Identity and the clock; the caller checks that
// Identity is trusted for ExitID (ExitTrust) and that the announcement is newer than the last one.
func VerifyExitAnnouncement(a *messages.ExitAnnouncement, now time.Time) error {
	return verify(a.Identity, a.Signature, a.Timestamp, announcementSigningBytes(a), now)
}

// VerifySessionDraining checks the signature by Signer and the clock; the receiver checks that the
// signer is the identity that granted the session.
func VerifySessionDraining(d *messages.SessionDraining, now time.Time) error {
	return verify(d.Signer, d.Signature, d.Timestamp, drainingSigningBytes(d), now)
}
