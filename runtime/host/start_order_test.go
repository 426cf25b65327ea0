package host

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// orderLog records, in order, the site starts and snapshots of one node.
type orderLog struct {
	mu     sync.Mutex
	events []string
}

func (l *orderLog) add(event string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, event)
}

func (l *orderLog) snapshot() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.events)
}

// startRecordingSites is a SiteRunner that only records its starts.
type startRecordingSites struct{ log *orderLog }

func (s startRecordingSites) Start(site string, _ *m.SiteSpec, _ string) error {
	s.log.add("start " + site)
	return nil
}
func (s startRecordingSites) Stop(string) {}
func (s startRecordingSites) Serve(_ string, w http.ResponseWriter, _ *http.Request) {
	w.WriteHeader(http.StatusOK)
}
func (s startRecordingSites) Quiesce(context.Context, string, time.Duration) (int, error) {
	return 0, nil
}
func (s startRecordingSites) IsRunning(string) bool { return false }

// snapshotRecordingDriver records when each snapshot begins.
type snapshotRecordingDriver struct {
	storage.Driver
	log *orderLog
}

func (d snapshotRecordingDriver) Snapshot(ctx context.Context, site storage.Site, snap storage.SnapName) (storage.Snapshot, error) {
	d.log.add("snapshot " + snap.String())
	return d.Driver.Snapshot(ctx, site, snap)
}

// TestPromotedSiteStartsBeforeItsFirstSnapshot: after a planned move the
// new master starts the site's processes before it takes its first
// snapshot at the new epoch. Storage carries out a site's requests in
// order; when that snapshot was asked for at the role change, the start
// (and so every held client) waited for it: 2 s for a 256 MiB database
// on the portable driver.
func TestPromotedSiteStartsBeforeItsFirstSnapshot(t *testing.T) {
	logs := map[string]*orderLog{}
	c := startClusterWith(t, 3, func(name string, opt *Options) {
		logs[name] = &orderLog{}
		opt.Sites = startRecordingSites{log: logs[name]}
		opt.Driver = snapshotRecordingDriver{Driver: opt.Driver, log: logs[name]}
	})
	const site = "delta"
	master, replica := c.placeSite(site)
	if ev := logs[replica].snapshot(); slices.Contains(ev, "start "+site) {
		t.Fatalf("the replica %s started the site before the move: %v", replica, ev)
	}
	c.nodes[master].host.Send(core.SiteAddr(master, site), &m.Migrate{Site: site, Target: replica, Reason: "admin"})
	c.servedBy(c.other(master, replica), site, replica)
	// The new epoch's snapshots are named e<term>-<replica>-s<seq>.
	firstOfEpoch := func(ev []string) int {
		return slices.IndexFunc(ev, func(e string) bool {
			name, ok := strings.CutPrefix(e, "snapshot ")
			if !ok {
				return false
			}
			ep, _, ok := parseSnapshotName(name)
			return ok && ep.Node == replica
		})
	}
	var ev []string
	eventually(t, "the new master takes its first snapshot", func() error {
		if ev = logs[replica].snapshot(); firstOfEpoch(ev) < 0 {
			return fmt.Errorf("no snapshot of %s's epoch yet: %v", replica, ev)
		}
		return nil
	})
	start, first := slices.Index(ev, "start "+site), firstOfEpoch(ev)
	if start < 0 || start > first {
		t.Fatalf("on %s the first snapshot of the new epoch (event %d) came before the site's start (event %d): %v", replica, first, start, ev)
	}
}
