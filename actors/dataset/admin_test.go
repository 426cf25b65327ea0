package dataset

import (
	"fmt"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

func siteView(t *testing.T, d *Dataset, env *core.Env, q *m.AdminQuery) *m.AdminView {
	t.Helper()
	fx := d.Step(env, q)
	if len(fx) != 1 {
		t.Fatalf("%d effects, want only the answer: %v", len(fx), fx)
	}
	s, ok := fx[0].(core.Send)
	v, isView := s.Msg.(*m.AdminView)
	if !ok || !isView || s.To != core.ClientAddr(q.ReplyNode) {
		t.Fatalf("got %#v, want an AdminView to client@%s", fx[0], q.ReplyNode)
	}
	return v
}

// A query to a dataset actor that has no copy (the query spawned it) is
// answered UNKNOWN_SITE and leaves the actor exactly as new: no report to
// the node, no timer, no state that a later placement would see.
func TestUnknownSiteQueryLeavesNothing(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "zz"), Now: time.Unix(1000, 0), Config: core.Default()}
	for _, q := range []*m.AdminQuery{
		{QueryId: 1, ReplyNode: "n2", Kind: m.AdminQueryKind_ADMIN_QUERY_SITE, Site: "zz"},
		{QueryId: 2, ReplyNode: "n1", Kind: m.AdminQueryKind_ADMIN_QUERY_SITE},
		{QueryId: 3, ReplyNode: "n1", Kind: m.AdminQueryKind_ADMIN_QUERY_CLUSTER},
		{QueryId: 4, ReplyNode: "n1", Kind: m.AdminQueryKind_ADMIN_QUERY_SITE, Site: "other"},
	} {
		d := New("n1", "zz")
		v := siteView(t, d, env, q)
		if want := map[uint64]m.Code{1: m.Code_CODE_UNKNOWN_SITE, 2: m.Code_CODE_UNKNOWN_SITE, 3: m.Code_CODE_INVALID,
			4: m.Code_CODE_INVALID}[q.QueryId]; v.Code != want || v.QueryId != q.QueryId || v.Node != "n1" {
			t.Errorf("query %v: answer %v, want %s from n1", q, v, want)
		}
		if v.Info != nil || len(v.Snapshots)+len(v.Stashes) != 0 {
			t.Errorf("query %v: answer %v carries a view of no copy", q, v)
		}
		if !reflect.DeepEqual(d, New("n1", "zz")) {
			t.Errorf("query %v changed the actor: %+v", q, d)
		}
	}
}

// bootedCopy is a replica booted from a disk holding snaps and stashes.
func bootedCopy(env *core.Env, snaps, stashes int) *Dataset {
	d := New("n1", "a")
	b := &m.DatasetBoot{Info: &m.DatasetInfo{Site: "a", Node: "n1", Role: m.Role_ROLE_REPLICA,
		Epoch: &m.Epoch{Term: 1, Node: "n2"}, Spec: &m.SiteSpec{Name: "a", Domains: []string{"a.example"}}}}
	for i := range snaps {
		b.Snapshots = append(b.Snapshots, &m.SnapshotRef{Name: fmt.Sprintf("e1-n2-s%d", i+1), Epoch: &m.Epoch{Term: 1, Node: "n2"}, Seq: uint64(i + 1)})
	}
	for i := range stashes {
		b.Stashes = append(b.Stashes, fmt.Sprintf("stash-%d", i+1))
	}
	d.Step(env, b)
	return d
}

// The site view of a copy is a deep copy, and answering changes nothing.
func TestSiteViewDoesNotAlias(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	q := &m.AdminQuery{QueryId: 1, ReplyNode: "n1", Kind: m.AdminQueryKind_ADMIN_QUERY_SITE, Site: "a"}
	d := bootedCopy(env, 3, 2)
	first := siteView(t, d, env, q)
	if first.Code != m.Code_CODE_OK || len(first.Snapshots) != 3 || first.Snapshots[0].Name != "e1-n2-s1" ||
		!slices.Equal(first.Stashes, []string{"stash-1", "stash-2"}) || first.Info.GetStashes() != 2 || first.Info.GetSnapshots() != 3 {
		t.Fatalf("answer %v", first)
	}
	want := proto.CloneOf(first)
	first.Snapshots[0].Name = "x"
	first.Snapshots[2].Epoch.Term = 99
	first.Snapshots[1] = nil
	first.Stashes[0] = "x"
	first.Info.Spec.Domains[0] = "x"
	first.Info.Epoch.Node = "x"
	first.Info.Latest.Seq = 99
	if next := siteView(t, d, env, q); !proto.Equal(next, want) {
		t.Fatalf("the next answer changed after the first was mutated:\n got %v\nwant %v", next, want)
	}
}

// Stash names are bounded by StashNamesMax: the newest are kept, the count
// still counts every stash, and the view says that some are not listed.
func TestStashNamesBounded(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	q := &m.AdminQuery{QueryId: 1, ReplyNode: "n1", Kind: m.AdminQueryKind_ADMIN_QUERY_SITE, Site: "a"}
	for _, tc := range []struct {
		boot, made int
	}{{0, 0}, {StashNamesMax - 1, 1}, {StashNamesMax, 0}, {StashNamesMax + 5, 0}, {3, StashNamesMax + 2}} {
		d := bootedCopy(env, 1, tc.boot)
		for i := range tc.made {
			d.addStash(fmt.Sprintf("stash-%d", tc.boot+i+1))
		}
		total := tc.boot + tc.made
		v := siteView(t, d, env, q)
		listed := min(total, StashNamesMax)
		if len(v.Stashes) != listed || int(v.Info.GetStashes()) != total {
			t.Errorf("%+v: %d names listed, count %d; want %d and %d", tc, len(v.Stashes), v.Info.GetStashes(), listed, total)
			continue
		}
		if listed > 0 && (v.Stashes[0] != fmt.Sprintf("stash-%d", total-listed+1) || v.Stashes[listed-1] != fmt.Sprintf("stash-%d", total)) {
			t.Errorf("%+v: names %s..%s, want the newest %d, oldest first", tc, v.Stashes[0], v.Stashes[listed-1], listed)
		}
		if (v.Detail != "") != (total > StashNamesMax) {
			t.Errorf("%+v: detail %q", tc, v.Detail)
		}
		if cap(d.stashes) > 2*StashNamesMax+1 {
			t.Errorf("%+v: %d names held", tc, cap(d.stashes))
		}
	}
}
