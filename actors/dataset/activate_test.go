package dataset

import (
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

func findEffect[T core.Effect](fx []core.Effect) (T, bool) {
	for _, e := range fx {
		if t, ok := e.(T); ok {
			return t, true
		}
	}
	var zero T
	return zero, false
}

// A failover's promotion that storage finds busy is tried again on a short
// timer, ActivateAttemptsMax times, then left to the balancer; a busy
// migration target answers its source instead, and success resets the
// count.
func TestFailoverActivationRetriesBusyStorage(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	d := bootedCopy(env, 2, 0)
	a := &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 5, Node: "n1"}, Reason: "failover"}
	fx := d.Step(env, a)
	st, ok := findEffect[core.Storage](fx)
	if !ok || st.Req.Op != m.StorageOp_STORAGE_OP_SET_ROLE {
		t.Fatalf("activation effects %v", fx)
	}
	for attempt := 1; ; attempt++ {
		fx = d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_BUSY, Detail: "dataset is busy"})
		timer, armed := findEffect[core.SetTimer](fx)
		if attempt > env.Config.ActivateAttemptsMax {
			if armed {
				t.Fatalf("attempt %d: retried past the bound", attempt)
			}
			break
		}
		if !armed || timer.Key != timerActivate || timer.After > time.Second {
			t.Fatalf("attempt %d: effects %v, want a short retry timer", attempt, fx)
		}
		fx = d.Step(env, &m.Timer{Key: timerActivate})
		if st, ok = findEffect[core.Storage](fx); !ok || st.Req.Op != m.StorageOp_STORAGE_OP_SET_ROLE || st.Req.Epoch.Term != 5 {
			t.Fatalf("attempt %d: retry effects %v", attempt, fx)
		}
	}
	// The balancer's next probe activates at a newer epoch; success resets.
	a2 := &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 6, Node: "n1"}, Reason: "failover"}
	fx = d.Step(env, a2)
	st, _ = findEffect[core.Storage](fx)
	d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_OK})
	if !d.active || d.activateRetries != 0 || d.retryActivate != nil {
		t.Fatalf("after success: active=%v retries=%d pending=%v", d.active, d.activateRetries, d.retryActivate)
	}
	// A stale retry timer does nothing once active.
	if fx := d.Step(env, &m.Timer{Key: timerActivate}); len(fx) != 0 {
		t.Fatalf("stale retry timer: %v", fx)
	}
}

func TestMigrationTargetBusyAnswersItsSource(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	d := bootedCopy(env, 2, 0)
	a := &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 5, Node: "n1"}, Reason: "migrate", FromNode: "n2"}
	st, _ := findEffect[core.Storage](d.Step(env, a))
	fx := d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_BUSY})
	if _, armed := findEffect[core.SetTimer](fx); armed {
		t.Fatalf("a migration target retried on its own: %v", fx)
	}
	s, ok := findEffect[core.Send](fx)
	if act, isAct := s.Msg.(*m.Activated); !ok || !isAct || act.Code != m.Code_CODE_BUSY || s.To != core.SiteAddr("n2", "a") {
		t.Fatalf("effects %v, want Activated BUSY to the source", fx)
	}
}

func snapshotRequests(fx []core.Effect) []*m.StorageRequest {
	var out []*m.StorageRequest
	for _, e := range fx {
		if st, ok := e.(core.Storage); ok && st.Req.Op == m.StorageOp_STORAGE_OP_SNAPSHOT {
			out = append(out, st.Req)
		}
	}
	return out
}

// An activation's first snapshot is asked for only once the local site
// actor answers Activated (after asking for its processes), so storage,
// which carries out a site's requests in order, starts the site first: a
// snapshot asked for at the role change held a promoted site's start
// behind it (2 s for a 256 MiB database on the portable driver). If the
// site actor never answers, the snapshot timer takes the first snapshot,
// forced, at the new epoch.
func TestFirstSnapshotWaitsForTheSiteActor(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	epoch := &m.Epoch{Term: 5, Node: "n1"}
	activate := func(d *Dataset) {
		t.Helper()
		st, _ := findEffect[core.Storage](d.Step(env, &m.Activate{Spec: d.spec, Epoch: epoch, Reason: "migrate", FromNode: "n2"}))
		fx := d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_OK})
		if snaps := snapshotRequests(fx); len(snaps) != 0 {
			t.Fatalf("snapshot asked for at the role change, before the site started: %v", snaps)
		}
		if s, ok := findEffect[core.Send](fx); !ok || s.To != core.SiteAddr("n1", "a") {
			t.Fatalf("activation effects %v: the site actor is not told", fx)
		}
	}

	d := bootedCopy(env, 2, 0)
	activate(d)
	// An answer for another epoch is not the one awaited.
	if fx := d.Step(env, &m.Activated{Site: "a", Node: "n1", Epoch: &m.Epoch{Term: 4, Node: "n1"}}); len(snapshotRequests(fx)) != 0 {
		t.Fatalf("snapshot on a stale Activated: %v", fx)
	}
	snaps := snapshotRequests(d.Step(env, &m.Activated{Site: "a", Node: "n1", Epoch: epoch}))
	if len(snaps) != 1 || snaps[0].IfChanged || snaps[0].Epoch.GetTerm() != 5 {
		t.Fatalf("after the site's Activated: %v, want one forced snapshot at 5:n1", snaps)
	}
	d.Step(env, &m.StorageResult{Op: m.StorageOp_STORAGE_OP_SNAPSHOT, Site: "a", OpId: d.nextID, Code: m.Code_CODE_OK, Snapshot: snaps[0].Snapshot})
	// A repeated answer takes no second snapshot.
	if fx := d.Step(env, &m.Activated{Site: "a", Node: "n1", Epoch: epoch}); len(snapshotRequests(fx)) != 0 {
		t.Fatalf("second first snapshot: %v", fx)
	}

	// No answer: the timer takes it, forced (an unchanged dataset too).
	d = bootedCopy(env, 2, 0)
	activate(d)
	snaps = snapshotRequests(d.Step(env, &m.Timer{Key: timerSnapshot}))
	if len(snaps) != 1 || snaps[0].IfChanged {
		t.Fatalf("snapshot timer without the site's answer: %v, want one forced snapshot", snaps)
	}
}

func offersTo(fx []core.Effect) map[string]string {
	out := map[string]string{}
	for _, e := range fx {
		if s, ok := e.(core.Send); ok {
			if o, ok := s.Msg.(*m.StreamOffer); ok {
				out[s.To.Node] = o.Target.GetName()
			}
		}
	}
	return out
}

// A migration's final delta that must wait for a snapshot being taken is
// not preceded by a stream of the older snapshot to its target: that
// stream queued behind the snapshot (storage runs a site's requests in
// order) and the final delta's own stream came only after it, while the
// site's clients were held. Other replicas are offered as before.
func TestFinalDeltaWaitsForTheSnapshotBeingTaken(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	d := bootedCopy(env, 2, 0)
	epoch := &m.Epoch{Term: 5, Node: "n1"}
	st, _ := findEffect[core.Storage](d.Step(env, &m.Activate{Spec: d.spec, Epoch: epoch, Replicas: []string{"n2", "n3"}, Reason: "failover"}))
	d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_OK})
	// snapshot completes the request and answers the offers it makes with
	// "have it", so that no stream stays in flight; it returns the offers.
	snapshot := func(fx []core.Effect) ([]core.Effect, map[string]string) {
		t.Helper()
		reqs := snapshotRequests(fx)
		if len(reqs) != 1 {
			t.Fatalf("effects %v: want one snapshot request", fx)
		}
		out := d.Step(env, &m.StorageResult{Op: m.StorageOp_STORAGE_OP_SNAPSHOT, Site: "a", OpId: reqs[0].OpId,
			Code: m.Code_CODE_OK, Snapshot: reqs[0].Snapshot})
		offers := offersTo(out)
		for node, target := range offers {
			d.Step(env, &m.StreamAnswer{Site: "a", StreamId: d.streams[node].id, Code: m.Code_CODE_OK, Have: target, Node: node})
		}
		return out, offers
	}
	_, offers := snapshot(d.Step(env, &m.Activated{Site: "a", Node: "n1", Epoch: epoch}))
	if len(offers) != 2 {
		t.Fatalf("first snapshot offered to %v, want n2 and n3", offers)
	}
	inFlight := d.Step(env, &m.Timer{Key: timerSnapshot})
	if fx := d.Step(env, &m.Sync{Site: "a", Target: "n2", Final: true, SyncId: 7}); len(snapshotRequests(fx)) != 0 {
		t.Fatalf("second snapshot asked for while one is taken: %v", fx)
	}
	fx, offers := snapshot(inFlight)
	if _, ok := offers["n2"]; ok || offers["n3"] == "" {
		t.Fatalf("while the final delta's snapshot is taken: offers %v, want n3 only", offers)
	}
	final := snapshotRequests(fx)
	if len(final) != 1 {
		t.Fatalf("the final delta's snapshot was not asked for: %v", fx)
	}
	if _, offers = snapshot(fx); offers["n2"] != final[0].Snapshot.Name {
		t.Fatalf("after the final delta's snapshot: offers %v, want %s to n2", offers, final[0].Snapshot.Name)
	}
}

// A pre-copy that reaches its target while a (scheduled) snapshot is being
// taken, or after one was taken during its stream, waits for that
// snapshot to reach the target too, so that the site's pause does not wait
// for its stream and the final delta is smaller; if that snapshot is not
// taken after all (nothing changed), the pre-copy is done at once with
// what the target holds.
func TestPreCopyTakesAnInFlightSnapshotAlong(t *testing.T) {
	for _, mode := range []string{"taking", "unchanged", "taken during the stream"} {
		f := newMigrationFixture(t)
		precopy := snapshotRequests(f.d.Step(f.env, &m.Sync{Site: "a", Target: "n2", SyncId: 3}))
		fx := f.complete(precopy[0], m.Code_CODE_OK)
		scheduled := snapshotRequests(f.d.Step(f.env, &m.Timer{Key: timerSnapshot}))
		if len(scheduled) != 1 {
			t.Fatal("no scheduled snapshot")
		}
		if mode == "taken during the stream" {
			if offers := offersTo(f.complete(scheduled[0], m.Code_CODE_OK)); len(offers) != 0 {
				t.Fatalf("offers %v while the pre-copy's stream is in flight", offers)
			}
			next := f.stream(fx)
			if done := syncDone(next); done != nil {
				t.Fatalf("pre-copy done with %s while a newer snapshot waits to be streamed", done.Snapshot.GetName())
			}
			done := syncDone(f.stream(next))
			if done == nil || done.Snapshot.GetName() != scheduled[0].Snapshot.Name {
				t.Fatalf("pre-copy answer %v, want done with the scheduled snapshot %s", done, scheduled[0].Snapshot.Name)
			}
			continue
		}
		if done := syncDone(f.stream(fx)); done != nil {
			t.Fatalf("pre-copy done (%s) while a snapshot is being taken", done.Snapshot.GetName())
		}
		if mode == "unchanged" {
			done := syncDone(f.complete(scheduled[0], m.Code_CODE_UNCHANGED))
			if done == nil || done.Snapshot.GetName() != precopy[0].Snapshot.Name {
				t.Fatalf("unchanged: pre-copy answer %v, want done with %s", done, precopy[0].Snapshot.Name)
			}
			continue
		}
		done := syncDone(f.stream(f.complete(scheduled[0], m.Code_CODE_OK)))
		if done == nil || done.Snapshot.GetName() != scheduled[0].Snapshot.Name {
			t.Fatalf("pre-copy answer %v, want done with the scheduled snapshot %s", done, scheduled[0].Snapshot.Name)
		}
	}
}

// When the pre-copy ends with a newer snapshot already taken that it may
// not take along (it took one along already), the target is offered
// nothing until the final delta's Sync: the final delta then streams from
// the pre-copy's snapshot straight to its own, instead of queueing behind
// a stream of the one in between while the site's clients are held. If no
// final Sync comes, the next scheduled snapshot offers to the target again.
func TestPauseHoldsOffersUntilTheFinalDelta(t *testing.T) {
	for _, final := range []bool{true, false} {
		f := newMigrationFixture(t)
		precopy := snapshotRequests(f.d.Step(f.env, &m.Sync{Site: "a", Target: "n2", SyncId: 3}))
		fx := f.complete(precopy[0], m.Code_CODE_OK)
		// Two scheduled snapshots, each taken during a stream.
		first := snapshotRequests(f.d.Step(f.env, &m.Timer{Key: timerSnapshot}))
		f.complete(first[0], m.Code_CODE_OK)
		next := f.stream(fx) // takes the first along
		second := snapshotRequests(f.d.Step(f.env, &m.Timer{Key: timerSnapshot}))
		f.complete(second[0], m.Code_CODE_OK)
		out := f.stream(next)
		if done := syncDone(out); done == nil || done.Snapshot.GetName() != first[0].Snapshot.Name {
			t.Fatalf("pre-copy answer %v, want done with %s", done, first[0].Snapshot.Name)
		}
		if offers := offersTo(out); offers["n2"] != "" {
			t.Fatalf("offered %s to the migration target between its pre-copy and its final delta", offers["n2"])
		}
		if !final {
			if offers := offersTo(f.d.Step(f.env, &m.Timer{Key: timerSnapshot})); offers["n2"] != second[0].Snapshot.Name {
				t.Fatalf("no final delta, next scheduled snapshot: offers %v, want %s to n2", offers, second[0].Snapshot.Name)
			}
			continue
		}
		fin := snapshotRequests(f.d.Step(f.env, &m.Sync{Site: "a", Target: "n2", Final: true, SyncId: 4}))
		if len(fin) != 1 {
			t.Fatal("the final delta asked for no snapshot")
		}
		offers := offersTo(f.complete(fin[0], m.Code_CODE_OK))
		if offers["n2"] != fin[0].Snapshot.Name || f.d.cursor["n2"] != first[0].Snapshot.Name {
			t.Fatalf("final delta: offers %v from %s, want %s from %s", offers, f.d.cursor["n2"], fin[0].Snapshot.Name, first[0].Snapshot.Name)
		}
	}
}

// migrationFixture is a master copy of site a at 5:n1 with replica n2,
// its first snapshot streamed to n2.
type migrationFixture struct {
	t   *testing.T
	env *core.Env
	d   *Dataset
}

func newMigrationFixture(t *testing.T) *migrationFixture {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	f := &migrationFixture{t: t, env: env, d: bootedCopy(env, 2, 0)}
	epoch := &m.Epoch{Term: 5, Node: "n1"}
	st, _ := findEffect[core.Storage](f.d.Step(env, &m.Activate{Spec: f.d.spec, Epoch: epoch, Replicas: []string{"n2"}, Reason: "failover"}))
	f.d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_OK})
	first := snapshotRequests(f.d.Step(env, &m.Activated{Site: "a", Node: "n1", Epoch: epoch}))
	f.stream(f.complete(first[0], m.Code_CODE_OK))
	return f
}

// complete answers a snapshot request.
func (f *migrationFixture) complete(req *m.StorageRequest, code m.Code) []core.Effect {
	res := &m.StorageResult{Op: m.StorageOp_STORAGE_OP_SNAPSHOT, Site: "a", OpId: req.OpId, Code: code}
	if code == m.Code_CODE_OK {
		res.Snapshot = req.Snapshot
	}
	return f.d.Step(f.env, res)
}

// stream carries an offer to n2 in fx through to the end of its send.
func (f *migrationFixture) stream(fx []core.Effect) []core.Effect {
	f.t.Helper()
	if offersTo(fx)["n2"] == "" {
		f.t.Fatalf("no offer to n2 in %v", fx)
	}
	s := f.d.streams["n2"]
	send, ok := findEffect[core.Storage](f.d.Step(f.env, &m.StreamAnswer{Site: "a", StreamId: s.id, Code: m.Code_CODE_OK, Node: "n2"}))
	if !ok || send.Req.Op != m.StorageOp_STORAGE_OP_SEND {
		f.t.Fatal("no send after the answer")
	}
	return f.d.Step(f.env, &m.StorageResult{Op: m.StorageOp_STORAGE_OP_SEND, Site: "a", OpId: send.Req.OpId, Code: m.Code_CODE_OK,
		StreamId: s.id, ToNode: "n2", Snapshot: send.Req.Snapshot})
}

func syncDone(fx []core.Effect) *m.SyncDone {
	for _, e := range fx {
		if s, ok := e.(core.Send); ok {
			if done, ok := s.Msg.(*m.SyncDone); ok {
				return done
			}
		}
	}
	return nil
}

// Why a failover's promotion failed in storage goes into the copy's report
// (cut at errDetailMax), so that an operator sees what keeps the site
// without a master; a later success clears it.
func TestAFailedActivationIsReportedUntilOneSucceeds(t *testing.T) {
	env := &core.Env{Self: core.DatasetAddr("n1", "a"), Now: time.Unix(1000, 0), Config: core.Default()}
	d := bootedCopy(env, 2, 0)
	st, _ := findEffect[core.Storage](d.Step(env, &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 5, Node: "n1"}, Reason: "failover"}))
	why := "promote a: zfs mount pool/sites/a: cannot mount '/mnt/sites/a': directory is not empty"
	long := why + strings.Repeat(" and more", 100)
	fx := d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_FAILED, Detail: long})
	var reported *m.DatasetInfo
	for _, e := range fx {
		if s, ok := e.(core.Send); ok && s.To == core.NodeAddr("n1") {
			if info, ok := s.Msg.(*m.DatasetInfo); ok {
				reported = info
			}
		}
	}
	if reported == nil || !strings.HasPrefix(reported.ActivationError, why) || len(reported.ActivationError) != errDetailMax {
		t.Fatalf("report after the failed activation: %v (effects %v)", reported, fx)
	}
	st, _ = findEffect[core.Storage](d.Step(env, &m.Activate{Spec: d.spec, Epoch: &m.Epoch{Term: 6, Node: "n1"}, Reason: "failover"}))
	d.Step(env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_OK})
	if got := d.Info().ActivationError; got != "" {
		t.Fatalf("after a successful activation the copy still reports %q", got)
	}
}

// Why the master's last stream to a replica failed (the receiver's error)
// goes into the master's report, so that an operator sees why the replica
// falls behind; the next stream that gets through clears it.
func TestAFailedStreamIsReportedUntilOneGetsThrough(t *testing.T) {
	f := newMigrationFixture(t)
	const why = "push a@e5-n1-s4: receiver: zfs receive -F pool/replicas/a: out of space (HTTP 507, out_of_space)"
	snapshotAndOffer := func() *stream {
		t.Helper()
		snaps := snapshotRequests(f.d.Step(f.env, &m.Timer{Key: timerSnapshot}))
		if len(snaps) != 1 {
			t.Fatal("no scheduled snapshot")
		}
		if offersTo(f.complete(snaps[0], m.Code_CODE_OK))["n2"] == "" {
			t.Fatal("no offer to n2")
		}
		return f.d.streams["n2"]
	}
	s := snapshotAndOffer()
	send, _ := findEffect[core.Storage](f.d.Step(f.env, &m.StreamAnswer{Site: "a", StreamId: s.id, Code: m.Code_CODE_OK, Node: "n2"}))
	fx := f.d.Step(f.env, &m.StorageResult{Op: m.StorageOp_STORAGE_OP_SEND, Site: "a", OpId: send.Req.OpId, Code: m.Code_CODE_FAILED,
		Detail: why, StreamId: s.id, ToNode: "n2"})
	var reported *m.DatasetInfo
	for _, e := range fx {
		if snd, ok := e.(core.Send); ok && snd.To == core.NodeAddr("n1") {
			reported, _ = snd.Msg.(*m.DatasetInfo)
		}
	}
	if reported == nil || reported.ReplicaErrors["n2"] != "stream failed: "+why {
		t.Fatalf("report after the failed stream: %v (effects %v)", reported, fx)
	}
	f.stream(f.complete(snapshotRequests(f.d.Step(f.env, &m.Timer{Key: timerSnapshot}))[0], m.Code_CODE_OK))
	if got := f.d.Info().ReplicaErrors; len(got) != 0 {
		t.Fatalf("after a stream got through the master still reports %v", got)
	}

	// A new master term starts with none: the old term's failures are not
	// its streams'.
	f.d.setReplErr("n2", "stream failed: "+why)
	st, ok := findEffect[core.Storage](f.d.Step(f.env, &m.Activate{Spec: f.d.spec, Epoch: &m.Epoch{Term: 6, Node: "n1"}, Replicas: []string{"n2"}, Reason: "resume"}))
	if !ok {
		t.Fatal("no role change for the new term")
	}
	f.d.Step(f.env, &m.StorageResult{Op: st.Req.Op, Site: "a", OpId: st.Req.OpId, Code: m.Code_CODE_OK})
	if got := f.d.Info().ReplicaErrors; len(got) != 0 {
		t.Fatalf("the new term reports the old one's failed streams: %v", got)
	}
}
