package storage

import (
	"fmt"
	"regexp"
	"strings"
)

// Names reach zfs command lines and file system paths. They are validated
// here, once, and carried afterwards as distinct types so that a raw string
// cannot reach a command by accident: the only way to get a Site, SnapName,
// StashName or HoldTag is through a Parse function (or a Must variant for
// constants in tests).

var (
	siteNamePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	snapNamePattern = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)
)

// Site is a validated site name: lower-case letters, digits and inner
// hyphens, 1 to 63 characters (a DNS label).
type Site struct{ name string }

// SnapName is a validated snapshot name: starts with a lower-case letter or
// digit, then up to 63 of [a-z0-9._-].
type SnapName struct{ name string }

// StashName is a validated stash name, same grammar as SnapName.
type StashName struct{ name string }

// HoldTag names a hold on a snapshot (for example the replica node that
// needs it as its incremental base), same grammar as SnapName.
type HoldTag struct{ name string }

func (s Site) String() string      { return s.name }
func (s SnapName) String() string  { return s.name }
func (s StashName) String() string { return s.name }
func (s HoldTag) String() string   { return s.name }

// IsZero reports whether the name is the zero value (never validated).
func (s Site) IsZero() bool { return s.name == "" }

// IsZero reports whether the name is the zero value. A zero SnapName means
// "no snapshot", e.g. the base of a full send.
func (s SnapName) IsZero() bool { return s.name == "" }

// IsZero reports whether the name is the zero value.
func (s StashName) IsZero() bool { return s.name == "" }

// ParseSite validates a site name.
func ParseSite(raw string) (Site, error) {
	if err := checkName("site", raw, siteNamePattern, "1-63 characters of a-z, 0-9 and '-', starting and ending with a letter or digit"); err != nil {
		return Site{}, err
	}
	return Site{raw}, nil
}

// ParseSnapName validates a snapshot name.
func ParseSnapName(raw string) (SnapName, error) {
	if err := checkName("snapshot", raw, snapNamePattern, "1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"); err != nil {
		return SnapName{}, err
	}
	return SnapName{raw}, nil
}

// ParseSnapNameOrEmpty is ParseSnapName that maps "" to the zero SnapName
// (used for "no base snapshot").
func ParseSnapNameOrEmpty(raw string) (SnapName, error) {
	if raw == "" {
		return SnapName{}, nil
	}
	return ParseSnapName(raw)
}

// ParseStashName validates a stash name.
func ParseStashName(raw string) (StashName, error) {
	if err := checkName("stash", raw, snapNamePattern, "1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"); err != nil {
		return StashName{}, err
	}
	return StashName{raw}, nil
}

// ParseHoldTag validates a hold tag.
func ParseHoldTag(raw string) (HoldTag, error) {
	if err := checkName("hold tag", raw, snapNamePattern, "1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"); err != nil {
		return HoldTag{}, err
	}
	return HoldTag{raw}, nil
}

// MustSite, MustSnap, MustStash and MustHoldTag panic on invalid input; they
// are for constants and tests.
func MustSite(raw string) Site {
	s, err := ParseSite(raw)
	if err != nil {
		panic(err)
	}
	return s
}

func MustSnap(raw string) SnapName {
	s, err := ParseSnapName(raw)
	if err != nil {
		panic(err)
	}
	return s
}

func MustStash(raw string) StashName {
	s, err := ParseStashName(raw)
	if err != nil {
		panic(err)
	}
	return s
}

func MustHoldTag(raw string) HoldTag {
	s, err := ParseHoldTag(raw)
	if err != nil {
		panic(err)
	}
	return s
}

func checkName(kind, raw string, pattern *regexp.Regexp, grammar string) error {
	reason := ""
	switch {
	case raw == "":
		reason = "is empty"
	case strings.HasPrefix(raw, "-"):
		reason = "starts with '-' (would be read as a command option)"
	case strings.ContainsAny(raw, "/\\"):
		reason = "contains a path separator"
	case strings.Contains(raw, ".."):
		reason = "contains '..'"
	case strings.ContainsAny(raw, "@#%:"):
		reason = "contains a ZFS separator ('@', '#', '%' or ':')"
	case strings.ContainsAny(raw, " \t\r\n\x00"):
		reason = "contains white space or NUL"
	case !pattern.MatchString(raw):
		reason = "must be " + grammar
	}
	if reason == "" {
		return nil
	}
	return fmt.Errorf("%w: %s name %q %s", ErrInvalidName, kind, raw, reason)
}
