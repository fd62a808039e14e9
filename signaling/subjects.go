package signaling

import (
	"fmt"
	"regexp"
)

// SubjectPrefix starts every subject Warren uses; the version in it changes with messages.WireVersion.
const SubjectPrefix = "warren.v1"

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether id may name an exit or a client in a subject: 1–64 of [A-Za-z0-9_-].
func ValidID(id string) error {
	if !idPattern.MatchString(id) {
		return fmt.Errorf("%w: id %q must be 1-64 characters of A-Z a-z 0-9 _ -", ErrInvalid, truncate(id, 64))
	}
	return nil
}

// ExitSubject is where exit id takes requests (session.request, session.close), request–reply.
func ExitSubject(exitID string) string { return SubjectPrefix + ".exit." + exitID + ".rpc" }

// ClientSubject is where a client with identity clientID hears from exits (goodbyes).
func ClientSubject(clientID string) string { return SubjectPrefix + ".client." + clientID + ".events" }

// AnnounceSubject is where every exit publishes its ExitAnnouncement (a broadcast).
const AnnounceSubject = SubjectPrefix + ".exits.announce"

// DiscoverSubject is where a client asks every exit for a fresh announcement (ExitsDiscover; each
// exit answers to the reply subject).
const DiscoverSubject = SubjectPrefix + ".exits.discover"
