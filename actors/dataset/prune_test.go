package dataset_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	"github.com/hybridcluster/hybridcluster/actors/dataset"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// day0 is a midnight, so hour and day buckets are easy to reason about.
var day0 = time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC)

// snaps builds snapshots at the given ages before now, oldest first (ages
// must be given in decreasing order).
func snaps(now time.Time, ages ...time.Duration) []*m.SnapshotRef {
	var out []*m.SnapshotRef
	for i, a := range ages {
		out = append(out, &m.SnapshotRef{Name: fmt.Sprintf("s%d", i), Seq: uint64(i + 1),
			TakenMs: now.Add(-a).UnixMilli(), Epoch: &m.Epoch{Term: 1, Node: "n1"}})
	}
	return out
}

func TestPrune(t *testing.T) {
	r := core.Retention{KeepAll: time.Hour, KeepHourly: 24 * time.Hour, KeepDaily: 7 * 24 * time.Hour}
	now := day0.Add(12 * time.Hour) // noon
	h, mn := time.Hour, time.Minute
	for _, tc := range []struct {
		name      string
		ages      []time.Duration
		protected []string
		want      []string
	}{
		{"nothing to prune when all are young", []time.Duration{50 * mn, 30 * mn, 1 * mn}, nil, nil},
		{"one snapshot stays", []time.Duration{30 * 24 * h}, nil, nil},
		{"newest always stays even if ancient", []time.Duration{40 * 24 * h, 30 * 24 * h}, nil, []string{"s0"}},
		// 3h10m, 3h20m, 3h40m ago are all in the 08:00 hour bucket: only the newest of them stays.
		{"hourly bucket keeps its newest", []time.Duration{3*h + 50*mn, 3*h + 40*mn, 3*h + 20*mn, 10 * mn}, nil, []string{"s0", "s1"}},
		{"separate hours are kept", []time.Duration{5*h + 30*mn, 4*h + 30*mn, 3*h + 30*mn, 10 * mn}, nil, nil},
		// Two and three days ago at 11:00 and 13:00: different days keep one each, same day keeps the newest.
		{"daily buckets", []time.Duration{3*24*h + 1*h, 2*24*h + 1*h, 2*24*h - 1*h, 10 * mn}, nil, []string{"s1"}},
		{"older than daily goes", []time.Duration{8 * 24 * h, 9 * mn}, nil, []string{"s0"}},
		{"protected stays past retention", []time.Duration{9 * 24 * h, 8 * 24 * h, 1 * mn}, []string{"s0"}, []string{"s1"}},
		{"protected does not use up its bucket", []time.Duration{3*h + 50*mn, 3*h + 40*mn, 10 * mn}, []string{"s1"}, nil},
	} {
		protected := map[string]bool{}
		for _, p := range tc.protected {
			protected[p] = true
		}
		got := dataset.Prune(r, now.UnixMilli(), snaps(now, tc.ages...), protected)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: Prune = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestPruneMinutely(t *testing.T) {
	r := core.Retention{KeepAll: 10 * time.Minute, KeepMinutely: time.Hour, KeepHourly: 24 * time.Hour, KeepDaily: 7 * 24 * time.Hour}
	now := day0.Add(12 * time.Hour) // noon
	h, mn, sec := time.Hour, time.Minute, time.Second
	for _, tc := range []struct {
		name string
		ages []time.Duration
		want []string
	}{
		{"every snapshot younger than KeepAll stays", []time.Duration{9*mn + 50*sec, 9*mn + 40*sec, 9*mn + 30*sec, 1 * mn}, nil},
		// 11:29:20, 11:29:40 and 11:29:50 share a minute: its newest stays.
		{"a minute keeps its newest", []time.Duration{30*mn + 40*sec, 30*mn + 20*sec, 30*mn + 10*sec, 5 * mn}, []string{"s0", "s1"}},
		{"separate minutes are kept", []time.Duration{32 * mn, 31 * mn, 30 * mn, 5 * mn}, nil},
		// Past KeepMinutely: 09:50 and 09:55 share an hour.
		{"then hourly", []time.Duration{2*h + 10*mn, 2*h + 5*mn, 5 * mn}, []string{"s0"}},
	} {
		got := dataset.Prune(r, now.UnixMilli(), snaps(now, tc.ages...), nil)
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: Prune = %v, want %v", tc.name, got, tc.want)
		}
	}
}
