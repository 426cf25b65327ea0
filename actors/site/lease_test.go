package site

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// Leases count holders (an acquire is idempotent: a renewal); those held
// from a node seen down are dropped (a session that died with its node never releases), so
// a load move is refused while a live holder remains and allowed after.
func TestLeasesOfADeadNodeAreDropped(t *testing.T) {
	env := &core.Env{Self: core.SiteAddr("n1", "a"), Now: time.Unix(100, 0), Config: core.Default()}
	s := New("n1", "a")
	s.Step(env, &m.Activate{Spec: &m.SiteSpec{Name: "a"}, Epoch: &m.Epoch{Term: 1, Node: "n1"}, Replicas: []string{"n2"}})
	s.Step(env, &m.LeaseAcquire{Site: "a", Holder: "ftp/n2/x-1"})
	s.Step(env, &m.LeaseAcquire{Site: "a", Holder: "ftp/n2/x-2"})
	s.Step(env, &m.LeaseAcquire{Site: "a", Holder: "ftp/n3/y-1"})
	s.Step(env, &m.LeaseAcquire{Site: "a", Holder: "ftp/n3/y-1"})
	if got := s.State().FtpLeases; got != 3 {
		t.Fatalf("leases %d, want 3 (a renewal counts once)", got)
	}
	s.Step(env, &m.MemberEvent{Node: "n2", Up: false})
	if got := s.State().FtpLeases; got != 1 {
		t.Fatalf("after n2 down: leases %d, want 1 (n3's)", got)
	}
	s.Step(env, &m.Migrate{Site: "a", Target: "n2", Reason: "load"})
	if s.phase != m.SitePhase_SITE_PHASE_ACTIVE {
		t.Fatalf("load move started with a live lease: phase %s", s.phase)
	}
	s.Step(env, &m.MemberEvent{Node: "n3", Up: true})
	if got := s.State().FtpLeases; got != 1 {
		t.Fatalf("after n3 up: leases %d, want 1", got)
	}
	s.Step(env, &m.LeaseRelease{Site: "a", Holder: "ftp/n3/y-1"})
	s.Step(env, &m.LeaseRelease{Site: "a", Holder: "ftp/n3/y-1"})
	s.Step(env, &m.Migrate{Site: "a", Target: "n2", Reason: "load"})
	if s.phase != m.SitePhase_SITE_PHASE_PRE_COPY {
		t.Fatalf("load move refused without leases: phase %s", s.phase)
	}
}
