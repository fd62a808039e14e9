package messages

// SoftwareVersion is Warren's version, announced by every exit (ExitAnnouncement.Version).
const SoftwareVersion = "0.14.0-dev"
