package storage

import (
	"sort"
	"time"
)

// RetentionPolicy says which snapshots to keep: every snapshot younger than
// KeepAllFor, the newest snapshot of each hour younger than KeepHourlyFor,
// the newest of each day younger than KeepDailyFor. Older ones go. The
// newest snapshot is always kept (it is the next incremental base).
type RetentionPolicy struct {
	KeepAllFor    time.Duration
	KeepHourlyFor time.Duration
	KeepDailyFor  time.Duration
}

// DefaultRetention: every snapshot for an hour, hourly for a day, daily for
// a week. The conformance suite prunes with it; nodes do not: their copies
// are pruned by the dataset actors after core.Retention (core.Default, or
// hcnode's snapshots: section), which the host carries out snapshot by
// snapshot.
var DefaultRetention = RetentionPolicy{
	KeepAllFor:    time.Hour,
	KeepHourlyFor: 24 * time.Hour,
	KeepDailyFor:  7 * 24 * time.Hour,
}

// Select splits snaps into those the policy keeps and those it drops, as of
// now. snaps are oldest first (as ListSnapshots returns them); that order
// breaks ties between equal creation times (ZFS has one-second
// resolution). It is pure: same input, same output. Buckets are in UTC.
func (p RetentionPolicy) Select(snaps []Snapshot, now time.Time) (keep, drop []Snapshot) {
	sorted := make([]Snapshot, len(snaps))
	for i, s := range snaps {
		sorted[len(snaps)-1-i] = s
	}
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Created.After(sorted[j].Created) })
	hourTaken := map[int64]bool{}
	dayTaken := map[int64]bool{}
	for i, s := range sorted {
		age := now.Sub(s.Created)
		kept := false
		switch {
		case i == 0:
			kept = true
		case age < p.KeepAllFor:
			kept = true
		case age < p.KeepHourlyFor:
			bucket := s.Created.UTC().Unix() / 3600
			if !hourTaken[bucket] {
				hourTaken[bucket] = true
				kept = true
			}
		case age < p.KeepDailyFor:
			bucket := s.Created.UTC().Unix() / 86400
			if !dayTaken[bucket] {
				dayTaken[bucket] = true
				kept = true
			}
		}
		if kept {
			keep = append(keep, s)
		} else {
			drop = append(drop, s)
		}
	}
	return keep, drop
}
