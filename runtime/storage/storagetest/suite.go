// Package storagetest is the conformance suite every storage.Driver passes.
// Run it from a test with a Harness that makes two independent drivers
// (two nodes; for ZFS, two pools).
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Harness makes the drivers under test.
type Harness struct {
	// NewPair returns two independent drivers of the same kind, cleaned up
	// with t.Cleanup.
	NewPair func(t *testing.T) (a, b storage.Driver)
}

// testTimeout bounds each case, so a hung zfs command fails the test
// instead of hanging it.
const testTimeout = 2 * time.Minute

// Run runs every conformance case as a subtest of t.
func Run(t *testing.T, h Harness) {
	a, b := h.NewPair(t)
	cases := []struct {
		name string
		fn   func(t *testing.T, ctx context.Context, a, b storage.Driver)
	}{
		{"CreateWriteSnapshot", testCreateWriteSnapshot},
		{"BadNamesRefused", testBadNames},
		{"IncrementalSendReceive", testIncremental},
		{"FullSendFallback", testFullSendFallback},
		{"FencingRefusesOlderEpoch", testFencing},
		{"DivergedStashRestore", testDivergedStashRestore},
		{"StashEverythingFullReceiveRestore", testStashEverything},
		{"StashEverythingKeepsFence", testStashEverythingFence},
		{"RollbackKeepsSafetySnapshot", testRollback},
		{"RollbackAgainAfterRestore", testRollbackAfterRestore},
		{"ReceiveRefusesOverSafetySnapshot", testReceiveOverSafety},
		{"PruneKeepsHeldAndProtected", testPrune},
		{"MountReadOnly", testMountReadOnly},
		{"CutStreamLeavesPreviousSnapshot", testCutStream},
		{"OutOfSpace", testOutOfSpace},
		{"SnapshotAll", testSnapshotAll},
		{"SnapshotWhileAppending", testSnapshotWhileAppending},
		{"PromotedReplicaWritesChangeNoSnapshot", testPromoteReplica},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			c.fn(t, ctx, a, b)
		})
	}
}

// ---- helpers ----

func siteFor(t *testing.T, suffix string) storage.Site {
	name := strings.ToLower(t.Name())
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	name = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		return -1
	}, name)
	if len(name) > 40 {
		name = name[:40]
	}
	return storage.MustSite(name + "-" + suffix)
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func wantErr(t *testing.T, err, target error, what string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

// WriteFile writes data at rel inside the site's live tree.
func WriteFile(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, rel string, data []byte) {
	t.Helper()
	mp, err := d.Mountpoint(ctx, site)
	must(t, err, "mountpoint")
	p := filepath.Join(mp, rel)
	must(t, os.MkdirAll(filepath.Dir(p), 0o755), "mkdir")
	must(t, os.WriteFile(p, data, 0o644), "write "+rel)
}

func removeFile(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, rel string) {
	t.Helper()
	mp, err := d.Mountpoint(ctx, site)
	must(t, err, "mountpoint")
	must(t, os.Remove(filepath.Join(mp, rel)), "remove "+rel)
}

// HashTree maps every regular file and symlink under dir to a hash of its
// content (directories by presence).
func HashTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	// The root may be a symlink (the portable driver's live tree is).
	dir, err := filepath.EvalSymlinks(dir)
	must(t, err, "resolve "+dir)
	err = filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		switch {
		case de.IsDir():
			out[rel] = "dir"
		case de.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out[rel] = "link:" + target
		case de.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(data)
			out[rel] = hex.EncodeToString(sum[:])
		}
		return nil
	})
	must(t, err, "hash tree "+dir)
	return out
}

func liveHash(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site) map[string]string {
	t.Helper()
	mp, err := d.Mountpoint(ctx, site)
	must(t, err, "mountpoint")
	return HashTree(t, mp)
}

func sameTree(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if len(want) == 0 {
		t.Fatalf("%s: comparing against an empty tree proves nothing", what)
	}
	var diffs []string
	for k, v := range want {
		if got[k] != v {
			diffs = append(diffs, "changed or missing: "+k)
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			diffs = append(diffs, "extra: "+k)
		}
	}
	if len(diffs) > 0 {
		sort.Strings(diffs)
		t.Fatalf("%s: trees differ: %s", what, strings.Join(diffs, "; "))
	}
}

func snapNames(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site) []string {
	t.Helper()
	snaps, err := d.ListSnapshots(ctx, site)
	must(t, err, "list snapshots")
	var out []string
	for _, s := range snaps {
		out = append(out, s.Name.String())
	}
	return out
}

func wantSnaps(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, want ...string) {
	t.Helper()
	got := snapNames(t, ctx, d, site)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("snapshots of %s: got %v, want %v", site, got, want)
	}
}

// Transfer sends site from a to b (incremental from base, or full when base
// is zero) through an in-memory pipe.
func Transfer(ctx context.Context, a, b storage.Driver, site storage.Site, epoch storage.Epoch, base, to storage.SnapName) (storage.Snapshot, error) {
	pr, pw := io.Pipe()
	sendErr := make(chan error, 1)
	go func() {
		err := a.Send(ctx, site, base, to, pw)
		pw.CloseWithError(err)
		sendErr <- err
	}()
	snap, err := b.Receive(ctx, site, epoch, base, pr)
	pr.CloseWithError(errors.New("receiver done"))
	serr := <-sendErr
	if err != nil {
		return snap, err
	}
	return snap, serr
}

func sendToBuffer(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, base, to storage.SnapName) []byte {
	t.Helper()
	var buf bytes.Buffer
	must(t, d.Send(ctx, site, base, to, &buf), "send")
	return buf.Bytes()
}

var epoch1 = storage.Epoch{Term: 1, Node: "n1"}

// replicate makes site on a with one file and snapshot s1, and a read-only
// replica of it on b.
func replicate(t *testing.T, ctx context.Context, a, b storage.Driver, site storage.Site, quota int64) {
	t.Helper()
	must(t, a.Create(ctx, site, quota), "create")
	WriteFile(t, ctx, a, site, "index.html", []byte("<h1>hello</h1>\n"))
	WriteFile(t, ctx, a, site, "data/blob.bin", randomBytes(300<<10))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
	must(t, err, "snapshot s1")
	_, err = Transfer(ctx, a, b, site, epoch1, storage.SnapName{}, storage.MustSnap("s1"))
	must(t, err, "full transfer s1")
}

// ---- cases ----

func testCreateWriteSnapshot(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 64<<20), "create")
	wantErr(t, a.Create(ctx, site, 0), storage.ErrExists, "second create")
	ok, err := a.Exists(ctx, site)
	must(t, err, "exists")
	if !ok {
		t.Fatal("Exists = false after Create")
	}
	WriteFile(t, ctx, a, site, "a.txt", []byte("one"))
	WriteFile(t, ctx, a, site, "sub/dir/b.txt", randomBytes(200<<10))
	before := time.Now().Add(-2 * time.Second)
	s1, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
	must(t, err, "snapshot")
	if s1.GUID == 0 || s1.Created.Before(before) || s1.Name.String() != "s1" {
		t.Fatalf("snapshot = %+v", s1)
	}
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s1"))
	wantErr(t, err, storage.ErrExists, "duplicate snapshot")
	WriteFile(t, ctx, a, site, "a.txt", []byte("two"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")
	snaps, err := a.ListSnapshots(ctx, site)
	must(t, err, "list")
	if len(snaps) != 2 || snaps[0].Name.String() != "s1" || snaps[1].Name.String() != "s2" || snaps[0].GUID == snaps[1].GUID {
		t.Fatalf("list = %+v", snaps)
	}
	u, err := a.Usage(ctx, site)
	must(t, err, "usage")
	if u.UsedBytes < 200<<10 || u.QuotaBytes != 64<<20 || u.AvailableBytes <= 0 || u.AvailableBytes > 64<<20 {
		t.Fatalf("usage = %+v", u)
	}
	free, err := a.Free(ctx)
	must(t, err, "free")
	if free <= 0 {
		t.Fatalf("free = %d", free)
	}
	size, err := a.Size(ctx)
	must(t, err, "size")
	if size < free || size < u.UsedBytes {
		t.Fatalf("size = %d, less than free (%d) or the site's use (%d)", size, free, u.UsedBytes)
	}
	_, err = a.ListSnapshots(ctx, storage.MustSite("no-such-site"))
	wantErr(t, err, storage.ErrNoDataset, "list of missing site")
	must(t, a.Destroy(ctx, site), "destroy")
	ok, err = a.Exists(ctx, site)
	must(t, err, "exists after destroy")
	if ok {
		t.Fatal("Exists = true after Destroy")
	}
	wantErr(t, a.Destroy(ctx, site), storage.ErrNoDataset, "second destroy")
}

func testBadNames(t *testing.T, ctx context.Context, a, b storage.Driver) {
	for _, raw := range []string{"", "-rf", "--help", "../etc", "a/b", "/abs", "Upper", "a@b", "a b", "a-", "-a", "a_b", "a.b",
		strings.Repeat("a", 64), "pool/hc", "x\x00y", "a#b", "a%b", "a:b"} {
		if _, err := storage.ParseSite(raw); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ParseSite(%q) = %v, want ErrInvalidName", raw, err)
		} else if err.Error() == "" || !strings.Contains(err.Error(), "site") {
			t.Errorf("ParseSite(%q) error is not clear: %v", raw, err)
		}
	}
	for _, raw := range []string{"", "-F", "..", "../x", "a/b", "@x", "x@y", ".hidden", "_x", "A", "a b", "hc:safety", strings.Repeat("a", 65)} {
		if _, err := storage.ParseSnapName(raw); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ParseSnapName(%q) = %v, want ErrInvalidName", raw, err)
		}
		if _, err := storage.ParseStashName(raw); !errors.Is(err, storage.ErrInvalidName) {
			t.Errorf("ParseStashName(%q) = %v, want ErrInvalidName", raw, err)
		}
	}
	for _, raw := range []string{"a", "site-1", "0", strings.Repeat("a", 63)} {
		if _, err := storage.ParseSite(raw); err != nil {
			t.Errorf("ParseSite(%q) = %v", raw, err)
		}
	}
	for _, raw := range []string{"s1", "2024-01-01t00.00.00", "a_b.c-d", strings.Repeat("a", 64)} {
		if _, err := storage.ParseSnapName(raw); err != nil {
			t.Errorf("ParseSnapName(%q) = %v", raw, err)
		}
	}
	// Zero values (never validated) are refused by the driver too.
	wantErr(t, a.Create(ctx, storage.Site{}, 0), storage.ErrInvalidName, "create with zero site")
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	_, err := a.Snapshot(ctx, site, storage.SnapName{})
	wantErr(t, err, storage.ErrInvalidName, "snapshot with zero name")
}

func testIncremental(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 0)
	sameTree(t, "after full send", liveHash(t, ctx, b, site), liveHash(t, ctx, a, site))
	// A replica is read-only: no snapshots of its own.
	_, err := b.Snapshot(ctx, site, storage.MustSnap("local"))
	wantErr(t, err, storage.ErrReadOnly, "snapshot of a replica")

	WriteFile(t, ctx, a, site, "index.html", []byte("<h1>changed</h1>\n"))
	WriteFile(t, ctx, a, site, "new/deep/file.txt", randomBytes(70<<10))
	removeFile(t, ctx, a, site, "data/blob.bin")
	WriteFile(t, ctx, a, site, "data/other.bin", randomBytes(1<<20))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")

	aSnaps, err := a.ListSnapshots(ctx, site)
	must(t, err, "list a")
	bSnaps, err := b.ListSnapshots(ctx, site)
	must(t, err, "list b")
	base, err := storage.PlanIncremental(aSnaps, bSnaps)
	must(t, err, "plan")
	if base.String() != "s1" {
		t.Fatalf("plan base = %q, want s1", base)
	}
	est, err := a.EstimateSendSize(ctx, site, base, storage.MustSnap("s2"))
	must(t, err, "estimate")
	stream := sendToBuffer(t, ctx, a, site, base, storage.MustSnap("s2"))
	if est <= 0 {
		t.Fatalf("estimate = %d", est)
	}
	if int64(len(stream)) > 3<<20 {
		t.Fatalf("incremental stream of ~1.1 MiB change is %d bytes", len(stream))
	}
	got, err := b.Receive(ctx, site, epoch1, base, bytes.NewReader(stream))
	must(t, err, "receive s2")
	if got.Name.String() != "s2" || got.GUID != aSnaps[1].GUID {
		t.Fatalf("received %+v, want s2 with guid %d", got, aSnaps[1].GUID)
	}
	sameTree(t, "after incremental", liveHash(t, ctx, b, site), liveHash(t, ctx, a, site))
	bSnaps, err = b.ListSnapshots(ctx, site)
	must(t, err, "list b")
	if len(bSnaps) != 2 || bSnaps[0].GUID != aSnaps[0].GUID || bSnaps[1].GUID != aSnaps[1].GUID {
		t.Fatalf("replica snapshots %+v do not match %+v", bSnaps, aSnaps)
	}
	// Receiving the same stream again: the replica already has s2.
	_, err = b.Receive(ctx, site, epoch1, base, bytes.NewReader(stream))
	if err == nil {
		t.Fatal("receiving an already applied stream succeeded")
	}
	// A stream from a different driver kind or garbage is refused.
	_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s2"), strings.NewReader("garbage that is not a stream at all"))
	wantErr(t, err, storage.ErrBadStream, "garbage stream")
	// Promotion makes it writable.
	must(t, b.SetReadOnly(ctx, site, false), "promote")
	WriteFile(t, ctx, b, site, "after-promotion.txt", []byte("ok"))
	_, err = b.Snapshot(ctx, site, storage.MustSnap("s3"))
	must(t, err, "snapshot after promotion")
	sameTreeExcept(t, liveHash(t, ctx, b, site), liveHash(t, ctx, a, site), "after-promotion.txt")
}

func sameTreeExcept(t *testing.T, got, want map[string]string, extra string) {
	t.Helper()
	if _, ok := got[extra]; !ok {
		t.Fatalf("%s missing", extra)
	}
	delete(got, extra)
	sameTree(t, "promoted replica", got, want)
}

func testFullSendFallback(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	for i, n := range []string{"s1", "s2", "s3"} {
		WriteFile(t, ctx, a, site, n+".txt", randomBytes(10<<10*(i+1)))
		_, err := a.Snapshot(ctx, site, storage.MustSnap(n))
		must(t, err, "snapshot")
	}
	aSnaps, err := a.ListSnapshots(ctx, site)
	must(t, err, "list")
	// No dataset on the receiver: the plan is a full send of the newest.
	base, err := storage.PlanIncremental(aSnaps, nil)
	must(t, err, "plan")
	if !base.IsZero() {
		t.Fatalf("plan for an empty receiver = %q, want full send", base)
	}
	_, err = Transfer(ctx, a, b, site, epoch1, base, storage.MustSnap("s3"))
	must(t, err, "full send of s3")
	wantSnaps(t, ctx, b, site, "s3")
	sameTree(t, "after full send", liveHash(t, ctx, b, site), liveHash(t, ctx, a, site))

	// A receiver whose history shares nothing with the sender is told so;
	// a full stream never overwrites an existing dataset.
	other := siteFor(t, "y")
	must(t, a.Create(ctx, other, 0), "create other")
	_, err = a.Snapshot(ctx, other, storage.MustSnap("s3"))
	must(t, err, "snapshot other")
	otherSnaps, err := a.ListSnapshots(ctx, other)
	must(t, err, "list other")
	bSnaps, err := b.ListSnapshots(ctx, site)
	must(t, err, "list b")
	_, err = storage.PlanIncremental(otherSnaps, bSnaps)
	wantErr(t, err, storage.ErrNoCommonSnapshot, "plan without common snapshot")
	stream := sendToBuffer(t, ctx, a, site, storage.SnapName{}, storage.MustSnap("s2"))
	_, err = b.Receive(ctx, site, epoch1, storage.SnapName{}, bytes.NewReader(stream))
	wantErr(t, err, storage.ErrNoCommonSnapshot, "full stream onto existing dataset")
	// An incremental whose base the receiver lacks.
	stream = sendToBuffer(t, ctx, a, site, storage.MustSnap("s1"), storage.MustSnap("s2"))
	_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s1"), bytes.NewReader(stream))
	wantErr(t, err, storage.ErrNoCommonSnapshot, "incremental without base")
	wantSnaps(t, ctx, b, site, "s3")
}

func testFencing(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	WriteFile(t, ctx, a, site, "f", []byte("1"))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
	must(t, err, "snapshot")
	e5 := storage.Epoch{Term: 5, Node: "n2"}
	_, err = Transfer(ctx, a, b, site, e5, storage.SnapName{}, storage.MustSnap("s1"))
	must(t, err, "transfer")
	got, err := b.Epoch(ctx, site)
	must(t, err, "epoch")
	if got != e5 {
		t.Fatalf("epoch after receive = %v, want %v", got, e5)
	}
	WriteFile(t, ctx, a, site, "f", []byte("2"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")
	stream := sendToBuffer(t, ctx, a, site, storage.MustSnap("s1"), storage.MustSnap("s2"))
	for _, old := range []storage.Epoch{{Term: 4, Node: "n9"}, {Term: 5, Node: "n1"}, {}} {
		_, err = b.Receive(ctx, site, old, storage.MustSnap("s1"), bytes.NewReader(stream))
		wantErr(t, err, storage.ErrFenced, "receive at older epoch "+old.String())
	}
	wantSnaps(t, ctx, b, site, "s1")
	// The same epoch is accepted; Fence only raises.
	_, err = b.Receive(ctx, site, e5, storage.MustSnap("s1"), bytes.NewReader(stream))
	must(t, err, "receive at the same epoch")
	e7 := storage.Epoch{Term: 7, Node: "n3"}
	must(t, b.Fence(ctx, site, e7), "fence")
	must(t, b.Fence(ctx, site, e5), "fence lower (no-op)")
	got, err = b.Epoch(ctx, site)
	must(t, err, "epoch")
	if got != e7 {
		t.Fatalf("epoch = %v, want %v", got, e7)
	}
	e, err := storage.ParseEpoch(e7.String())
	must(t, err, "parse epoch")
	if e != e7 || e7.String() != "00000000000000000007:n3" {
		t.Fatalf("epoch round trip %q -> %v", e7.String(), e)
	}
}

func testDivergedStashRestore(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 0)
	// Partition: b is promoted and takes writes; a keeps going too.
	must(t, b.SetReadOnly(ctx, site, false), "promote b")
	WriteFile(t, ctx, b, site, "written-on-b.txt", []byte("b's write"))
	_, err := b.Snapshot(ctx, site, storage.MustSnap("b1"))
	must(t, err, "snapshot b1")
	WriteFile(t, ctx, b, site, "unsnapshotted-on-b.txt", []byte("b's later write"))
	bLive := liveHash(t, ctx, b, site)
	WriteFile(t, ctx, a, site, "written-on-a.txt", []byte("a's write"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("a2"))
	must(t, err, "snapshot a2")
	stream := sendToBuffer(t, ctx, a, site, storage.MustSnap("s1"), storage.MustSnap("a2"))

	_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s1"), bytes.NewReader(stream))
	wantErr(t, err, storage.ErrNotReplica, "receive into a writable dataset")
	must(t, b.SetReadOnly(ctx, site, true), "demote b")
	_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s1"), bytes.NewReader(stream))
	wantErr(t, err, storage.ErrDiverged, "receive onto diverged replica")
	aSnaps, _ := a.ListSnapshots(ctx, site)
	bSnaps, _ := b.ListSnapshots(ctx, site)
	base, err := storage.PlanIncremental(aSnaps, bSnaps)
	wantErr(t, err, storage.ErrDiverged, "plan onto diverged replica")
	if base.String() != "s1" {
		t.Fatalf("diverged plan base = %q, want s1", base)
	}

	must(t, b.Stash(ctx, site, base, storage.MustStash("partition-1")), "stash")
	wantSnaps(t, ctx, b, site, "s1")
	stashes, err := b.ListStash(ctx, site)
	must(t, err, "list stash")
	if len(stashes) != 1 || stashes[0].Name.String() != "partition-1" || stashes[0].Base.String() != "s1" ||
		len(stashes[0].Snapshots) != 1 || stashes[0].Snapshots[0].Name != "b1" {
		t.Fatalf("stashes = %+v", stashes)
	}
	wantErr(t, b.Stash(ctx, site, base, storage.MustStash("partition-1")), storage.ErrExists, "stash name reused")
	_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s1"), bytes.NewReader(stream))
	must(t, err, "receive after stash")
	sameTree(t, "replica after stash+receive", liveHash(t, ctx, b, site), liveHash(t, ctx, a, site))

	// The operator restores the stash: b's writes come back, a's history is
	// itself stashed rather than lost.
	must(t, b.RestoreStash(ctx, site, storage.MustStash("partition-1"), storage.MustStash("displaced-1")), "restore")
	wantSnaps(t, ctx, b, site, "s1", "b1")
	sameTree(t, "restored stash", liveHash(t, ctx, b, site), bLive)
	stashes, err = b.ListStash(ctx, site)
	must(t, err, "list stash")
	if len(stashes) != 1 || stashes[0].Name.String() != "displaced-1" || len(stashes[0].Snapshots) != 1 || stashes[0].Snapshots[0].Name != "a2" {
		t.Fatalf("stashes after restore = %+v", stashes)
	}
	wantErr(t, b.RestoreStash(ctx, site, storage.MustStash("partition-1"), storage.MustStash("x")), storage.ErrNoDataset, "restore of a gone stash")
}

// unrelatedMaster replaces site on a with a new history that shares no
// snapshot with anything received before (a new master after a loss): one
// file and snapshot n1.
func unrelatedMaster(t *testing.T, ctx context.Context, a storage.Driver, site storage.Site) {
	t.Helper()
	must(t, a.Destroy(ctx, site), "destroy on a")
	must(t, a.Create(ctx, site, 0), "recreate on a")
	WriteFile(t, ctx, a, site, "new-master.txt", []byte("a new history"))
	WriteFile(t, ctx, a, site, "data/other.bin", randomBytes(100<<10))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("n1"))
	must(t, err, "snapshot n1")
}

func testStashEverything(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 64<<20)
	// b was master for a while: a snapshot and unsnapshotted writes of its own.
	must(t, b.SetReadOnly(ctx, site, false), "promote b")
	WriteFile(t, ctx, b, site, "written-on-b.txt", []byte("b's write"))
	_, err := b.Snapshot(ctx, site, storage.MustSnap("b1"))
	must(t, err, "snapshot b1")
	WriteFile(t, ctx, b, site, "unsnapshotted-on-b.txt", []byte("b's later write"))
	bLive := liveHash(t, ctx, b, site)
	must(t, b.SetReadOnly(ctx, site, true), "demote b")
	unrelatedMaster(t, ctx, a, site)

	aSnaps, err := a.ListSnapshots(ctx, site)
	must(t, err, "list a")
	bSnaps, err := b.ListSnapshots(ctx, site)
	must(t, err, "list b")
	_, err = storage.PlanIncremental(aSnaps, bSnaps)
	wantErr(t, err, storage.ErrNoCommonSnapshot, "plan without common snapshot")
	stream := sendToBuffer(t, ctx, a, site, storage.SnapName{}, storage.MustSnap("n1"))
	_, err = b.Receive(ctx, site, epoch1, storage.SnapName{}, bytes.NewReader(stream))
	wantErr(t, err, storage.ErrNoCommonSnapshot, "full stream onto a dataset with snapshots")

	// Stash everything: the site is left empty, without snapshots, still a
	// read-only replica with its epoch.
	must(t, b.Stash(ctx, site, storage.SnapName{}, storage.MustStash("resync-1")), "stash everything")
	wantSnaps(t, ctx, b, site)
	if ok, err := b.Exists(ctx, site); err != nil || !ok {
		t.Fatalf("exists after stash everything = %v, %v; want an empty dataset", ok, err)
	}
	if got := liveHash(t, ctx, b, site); len(got) != 0 {
		t.Fatalf("live tree after stash everything = %v, want empty", got)
	}
	if got, err := b.Epoch(ctx, site); err != nil || got != epoch1 {
		t.Fatalf("epoch after stash everything = %v, %v; want %v", got, err, epoch1)
	}
	must(t, b.SetReadOnly(ctx, site, true), "set read-only after stash everything (the host does)")
	stashes, err := b.ListStash(ctx, site)
	must(t, err, "list stash")
	if len(stashes) != 1 || stashes[0].Name.String() != "resync-1" || !stashes[0].Base.IsZero() ||
		len(stashes[0].Snapshots) != 2 || stashes[0].Snapshots[0].Name != "s1" || stashes[0].Snapshots[1].Name != "b1" {
		t.Fatalf("stashes after stash everything = %+v", stashes)
	}
	wantErr(t, b.Stash(ctx, site, storage.SnapName{}, storage.MustStash("resync-1")), storage.ErrExists, "stash name reused")

	// The full stream now goes in and gives the sender's data.
	_, err = b.Receive(ctx, site, epoch1, storage.SnapName{}, bytes.NewReader(stream))
	must(t, err, "full receive after stash everything")
	wantSnaps(t, ctx, b, site, "n1")
	sameTree(t, "replica after stash everything + full receive", liveHash(t, ctx, b, site), liveHash(t, ctx, a, site))
	_, err = b.Snapshot(ctx, site, storage.MustSnap("local"))
	wantErr(t, err, storage.ErrReadOnly, "snapshot of the received replica")
	// Incrementals continue from there.
	WriteFile(t, ctx, a, site, "n2.txt", []byte("after the resync"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("n2"))
	must(t, err, "snapshot n2")
	_, err = Transfer(ctx, a, b, site, epoch1, storage.MustSnap("n1"), storage.MustSnap("n2"))
	must(t, err, "incremental after the resync")
	aLive := liveHash(t, ctx, a, site)
	sameTree(t, "replica after incremental", liveHash(t, ctx, b, site), aLive)

	// Restoring brings b's old history and live state back; the received
	// history is itself stashed, whole.
	must(t, b.RestoreStash(ctx, site, storage.MustStash("resync-1"), storage.MustStash("displaced-1")), "restore stash of everything")
	wantSnaps(t, ctx, b, site, "s1", "b1")
	sameTree(t, "restored stash of everything", liveHash(t, ctx, b, site), bLive)
	if got, err := b.Epoch(ctx, site); err != nil || got != epoch1 {
		t.Fatalf("epoch after restore = %v, %v; want %v", got, err, epoch1)
	}
	_, err = b.Snapshot(ctx, site, storage.MustSnap("local"))
	wantErr(t, err, storage.ErrReadOnly, "restored dataset keeps the site's read-only setting")
	stashes, err = b.ListStash(ctx, site)
	must(t, err, "list stash after restore")
	if len(stashes) != 1 || stashes[0].Name.String() != "displaced-1" || !stashes[0].Base.IsZero() ||
		len(stashes[0].Snapshots) != 2 || stashes[0].Snapshots[0].Name != "n1" || stashes[0].Snapshots[1].Name != "n2" {
		t.Fatalf("stashes after restore = %+v", stashes)
	}
	// And back again: nothing was lost on either side.
	must(t, b.RestoreStash(ctx, site, storage.MustStash("displaced-1"), storage.MustStash("displaced-2")), "restore the displaced history")
	wantSnaps(t, ctx, b, site, "n1", "n2")
	sameTree(t, "restored displaced history", liveHash(t, ctx, b, site), aLive)
	wantErr(t, b.RestoreStash(ctx, site, storage.MustStash("resync-1"), storage.MustStash("x")), storage.ErrNoDataset, "restore of a gone stash")
}

func testStashEverythingFence(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 0)
	e5 := storage.Epoch{Term: 5, Node: "n2"}
	must(t, b.Fence(ctx, site, e5), "fence")
	unrelatedMaster(t, ctx, a, site)
	must(t, b.Stash(ctx, site, storage.SnapName{}, storage.MustStash("resync-1")), "stash everything")
	if got, err := b.Epoch(ctx, site); err != nil || got != e5 {
		t.Fatalf("epoch after stash everything = %v, %v; want %v", got, err, e5)
	}
	stream := sendToBuffer(t, ctx, a, site, storage.SnapName{}, storage.MustSnap("n1"))
	for _, old := range []storage.Epoch{epoch1, {Term: 5, Node: "n1"}, {}} {
		_, err := b.Receive(ctx, site, old, storage.SnapName{}, bytes.NewReader(stream))
		wantErr(t, err, storage.ErrFenced, "full receive at older epoch "+old.String()+" after stash everything")
	}
	wantSnaps(t, ctx, b, site)
	e6 := storage.Epoch{Term: 6, Node: "n1"}
	_, err := b.Receive(ctx, site, e6, storage.SnapName{}, bytes.NewReader(stream))
	must(t, err, "full receive at a newer epoch")
	if got, err := b.Epoch(ctx, site); err != nil || got != e6 {
		t.Fatalf("epoch after receive = %v, %v; want %v", got, err, e6)
	}
	sameTree(t, "after fenced resync", liveHash(t, ctx, b, site), liveHash(t, ctx, a, site))

	// A dataset without snapshots but with unsnapshotted files is never
	// overwritten by a full stream.
	other := siteFor(t, "y")
	must(t, b.Create(ctx, other, 0), "create other")
	WriteFile(t, ctx, b, other, "precious.txt", []byte("not in any snapshot"))
	must(t, b.SetReadOnly(ctx, other, true), "demote other")
	must(t, a.Create(ctx, other, 0), "create other on a")
	WriteFile(t, ctx, a, other, "f", []byte("x"))
	_, err = a.Snapshot(ctx, other, storage.MustSnap("o1"))
	must(t, err, "snapshot o1")
	_, err = Transfer(ctx, a, b, other, e6, storage.SnapName{}, storage.MustSnap("o1"))
	wantErr(t, err, storage.ErrNoCommonSnapshot, "full stream onto unsnapshotted files")
	wantSnaps(t, ctx, b, other)
	if got := liveHash(t, ctx, b, other); got["precious.txt"] == "" {
		t.Fatalf("unsnapshotted file lost: %v", got)
	}
}

func testRollback(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	WriteFile(t, ctx, a, site, "page.html", []byte("v1"))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
	must(t, err, "snapshot s1")
	v1 := liveHash(t, ctx, a, site)
	WriteFile(t, ctx, a, site, "page.html", []byte("v2"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")
	WriteFile(t, ctx, a, site, "page.html", []byte("v3 not snapshotted"))
	WriteFile(t, ctx, a, site, "new.html", []byte("new"))
	v3 := liveHash(t, ctx, a, site)

	must(t, a.Rollback(ctx, site, storage.MustSnap("s1"), storage.MustStash("rollback-1")), "rollback")
	sameTree(t, "after rollback", liveHash(t, ctx, a, site), v1)
	wantSnaps(t, ctx, a, site, "s1")
	stashes, err := a.ListStash(ctx, site)
	must(t, err, "list stash")
	if len(stashes) != 1 || len(stashes[0].Snapshots) != 2 || stashes[0].Snapshots[0].Name != "s2" || !storage.IsSafetySnapshot(stashes[0].Snapshots[1].Name) {
		t.Fatalf("rollback stash = %+v", stashes)
	}
	// Writable after rollback, and the rollback itself can be undone.
	WriteFile(t, ctx, a, site, "page.html", []byte("v4"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s4"))
	must(t, err, "snapshot after rollback")
	must(t, a.RestoreStash(ctx, site, storage.MustStash("rollback-1"), storage.MustStash("undo-1")), "undo rollback")
	sameTree(t, "rollback undone", liveHash(t, ctx, a, site), v3)
	wantErr(t, a.Rollback(ctx, site, storage.MustSnap("nope"), storage.MustStash("rollback-2")), storage.ErrNoDataset, "rollback to missing snapshot")
}

// stashSnapshots is what ListStash says stash holds.
func stashSnapshots(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, stash string) []string {
	t.Helper()
	stashes, err := d.ListStash(ctx, site)
	must(t, err, "list stash")
	for _, st := range stashes {
		if st.Name.String() == stash {
			var names []string
			for _, s := range st.Snapshots {
				names = append(names, s.Name)
			}
			return names
		}
	}
	t.Fatalf("no stash %s in %+v", stash, stashes)
	return nil
}

// testRollbackAfterRestore: restoring a rollback's stash brings that
// rollback's safety snapshot back into the site's history. A later rollback
// of the site must still take its own safety snapshot (it used to fail with
// "hc:safety already exists"), also when a restored stash's name is used
// again, and listings never show safety snapshots.
func testRollbackAfterRestore(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	WriteFile(t, ctx, a, site, "page.html", []byte("v1"))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
	must(t, err, "snapshot s1")
	WriteFile(t, ctx, a, site, "page.html", []byte("v2"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")
	WriteFile(t, ctx, a, site, "page.html", []byte("v3 not snapshotted"))
	v3 := liveHash(t, ctx, a, site)

	must(t, a.Rollback(ctx, site, storage.MustSnap("s1"), storage.MustStash("r1")), "first rollback")
	must(t, a.RestoreStash(ctx, site, storage.MustStash("r1"), storage.MustStash("u1")), "restore the first rollback's stash")
	sameTree(t, "first rollback undone", liveHash(t, ctx, a, site), v3)
	wantSnaps(t, ctx, a, site, "s1", "s2")

	WriteFile(t, ctx, a, site, "page.html", []byte("v5 not snapshotted"))
	v5 := liveHash(t, ctx, a, site)
	must(t, a.Rollback(ctx, site, storage.MustSnap("s1"), storage.MustStash("r2")), "rollback after restoring a rollback's stash")
	wantSnaps(t, ctx, a, site, "s1")
	got := stashSnapshots(t, ctx, a, site, "r2")
	if len(got) != 3 || got[0] != "s2" || !storage.IsSafetySnapshot(got[1]) || !storage.IsSafetySnapshot(got[2]) || got[1] == got[2] {
		t.Fatalf("second rollback's stash holds %v; want s2 and two distinct safety snapshots", got)
	}
	must(t, a.RestoreStash(ctx, site, storage.MustStash("r2"), storage.MustStash("u2")), "restore the second rollback's stash")
	sameTree(t, "second rollback undone", liveHash(t, ctx, a, site), v5)
	wantSnaps(t, ctx, a, site, "s1", "s2")

	// The name of a restored stash is free again; its safety snapshot's
	// name is not.
	must(t, a.Rollback(ctx, site, storage.MustSnap("s2"), storage.MustStash("r1")), "rollback into a restored stash's name")
	wantSnaps(t, ctx, a, site, "s1", "s2")
	got = stashSnapshots(t, ctx, a, site, "r1")
	if len(got) != 3 || !storage.IsSafetySnapshot(got[2]) || got[2] == got[0] || got[2] == got[1] {
		t.Fatalf("third rollback's stash holds %v; want the two restored safety snapshots and a new one", got)
	}
	must(t, a.RestoreStash(ctx, site, storage.MustStash("r1"), storage.MustStash("u3")), "restore the third rollback's stash")
	sameTree(t, "third rollback undone", liveHash(t, ctx, a, site), v5)
	wantSnaps(t, ctx, a, site, "s1", "s2")
}

// testReceiveOverSafety: a restored rollback stash can leave a safety
// snapshot after the site's newest listed snapshot. When the copy later
// becomes a replica, a stream from that listed snapshot must not roll the
// safety snapshot away (a `zfs receive -F` would destroy it): the receive
// is refused as diverged, and after the caller stashes, it goes through.
func testReceiveOverSafety(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 0)
	WriteFile(t, ctx, a, site, "index.html", []byte("written after s1, then rolled back"))
	rolledAway := liveHash(t, ctx, a, site)
	must(t, a.Rollback(ctx, site, storage.MustSnap("s1"), storage.MustStash("r1")), "rollback")
	must(t, a.RestoreStash(ctx, site, storage.MustStash("r1"), storage.MustStash("u1")), "restore")
	wantSnaps(t, ctx, a, site, "s1")
	must(t, a.SetReadOnly(ctx, site, true), "demote a")

	must(t, b.SetReadOnly(ctx, site, false), "promote b")
	WriteFile(t, ctx, b, site, "index.html", []byte("the new master's"))
	_, err := b.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2 on b")
	e2 := storage.Epoch{Term: 2, Node: "n2"}
	_, err = Transfer(ctx, b, a, site, e2, storage.MustSnap("s1"), storage.MustSnap("s2"))
	wantErr(t, err, storage.ErrDiverged, "receive over a safety snapshot")
	sameTree(t, "refused receive", liveHash(t, ctx, a, site), rolledAway)

	must(t, a.Stash(ctx, site, storage.MustSnap("s1"), storage.MustStash("diverged")), "stash what came after s1")
	if got := stashSnapshots(t, ctx, a, site, "diverged"); len(got) != 1 || !storage.IsSafetySnapshot(got[0]) {
		t.Fatalf("stash holds %v; want the safety snapshot", got)
	}
	_, err = Transfer(ctx, b, a, site, e2, storage.MustSnap("s1"), storage.MustSnap("s2"))
	must(t, err, "receive after stashing")
	wantSnaps(t, ctx, a, site, "s1", "s2")
	sameTree(t, "received", liveHash(t, ctx, a, site), liveHash(t, ctx, b, site))
}

func testPrune(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	names := []string{"p1", "p2", "p3", "p4", "p5"}
	for _, n := range names {
		WriteFile(t, ctx, a, site, n, []byte(n))
		_, err := a.Snapshot(ctx, site, storage.MustSnap(n))
		must(t, err, "snapshot")
	}
	tag := storage.MustHoldTag("replica-n2")
	must(t, a.Hold(ctx, site, storage.MustSnap("p2"), tag), "hold")
	wantErr(t, a.Hold(ctx, site, storage.MustSnap("p2"), tag), storage.ErrExists, "double hold")
	snaps, err := a.ListSnapshots(ctx, site)
	must(t, err, "list")
	if snaps[1].Holds != 1 {
		t.Fatalf("p2 holds = %d, want 1", snaps[1].Holds)
	}
	// Nothing is old yet under the default policy.
	pruned, err := a.Prune(ctx, site, storage.DefaultRetention, nil, time.Now())
	must(t, err, "prune now")
	if len(pruned) != 0 {
		t.Fatalf("pruned %v of fresh snapshots", pruned)
	}
	// A month later everything but the newest is past retention; the held
	// and the protected snapshot stay.
	later := time.Now().Add(30 * 24 * time.Hour)
	pruned, err = a.Prune(ctx, site, storage.DefaultRetention, []storage.SnapName{storage.MustSnap("p3")}, later)
	must(t, err, "prune later")
	if len(pruned) != 2 {
		t.Fatalf("pruned %v, want p1 and p4", pruned)
	}
	wantSnaps(t, ctx, a, site, "p2", "p3", "p5")
	must(t, a.Release(ctx, site, storage.MustSnap("p2"), tag), "release")
	pruned, err = a.Prune(ctx, site, storage.DefaultRetention, nil, later)
	must(t, err, "prune after release")
	wantSnaps(t, ctx, a, site, "p5")
	if len(pruned) != 2 {
		t.Fatalf("pruned %v, want p2 and p3", pruned)
	}

	// The policy itself: every snapshot for the first hour, then hourly, then daily.
	now := time.Date(2030, 1, 10, 12, 0, 0, 0, time.UTC)
	var in []storage.Snapshot
	for i := 0; i < 10*24*4; i++ { // every 15 minutes for ten days
		in = append(in, storage.Snapshot{Name: storage.MustSnap("t" + itoa(i)), Created: now.Add(-time.Duration(i) * 15 * time.Minute)})
	}
	keep, drop := storage.DefaultRetention.Select(in, now)
	if len(keep)+len(drop) != len(in) {
		t.Fatal("Select lost snapshots")
	}
	// 4 in the last hour (ages 0,15,30,45 min), one per hour for the rest of the day
	// (23 or 24), one per day for the rest of the week (6 or 7).
	if len(keep) < 4+23+6 || len(keep) > 4+24+7 {
		t.Fatalf("default retention kept %d snapshots", len(keep))
	}
}

func itoa(i int) string {
	const digits = "0123456789"
	if i < 10 {
		return digits[i : i+1]
	}
	return itoa(i/10) + digits[i%10:i%10+1]
}

func testMountReadOnly(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	WriteFile(t, ctx, a, site, "page.html", []byte("old version"))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
	must(t, err, "snapshot")
	old := liveHash(t, ctx, a, site)
	WriteFile(t, ctx, a, site, "page.html", []byte("new version"))
	_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")

	dir, err := a.MountReadOnly(ctx, site, storage.MustSnap("s1"))
	must(t, err, "mount")
	sameTree(t, "mounted snapshot", HashTree(t, dir), old)
	if err := os.WriteFile(filepath.Join(dir, "page.html"), []byte("tamper"), 0o644); err == nil && os.Geteuid() != 0 {
		t.Fatal("writing into a read-only mount succeeded")
	}
	if err := os.WriteFile(filepath.Join(dir, "newfile"), []byte("x"), 0o644); err == nil {
		if strings.Contains(a.Kind(), "zfs") {
			t.Fatal("creating a file in a read-only ZFS mount succeeded")
		}
		_ = os.Remove(filepath.Join(dir, "newfile"))
	}
	// A mounted snapshot is in use: pruning leaves it.
	pruned, err := a.Prune(ctx, site, storage.DefaultRetention, nil, time.Now().Add(30*24*time.Hour))
	must(t, err, "prune")
	if len(pruned) != 0 {
		t.Fatalf("pruned %v while mounted", pruned)
	}
	// Mounts are counted: a second user of the same snapshot (the change
	// check mounts the newest snapshot while an admin may hold it) gets the
	// same files, and they stay until the last unmount.
	mounted := HashTree(t, dir) // (root may have written into it above)
	dir2, err := a.MountReadOnly(ctx, site, storage.MustSnap("s1"))
	must(t, err, "second mount of the same snapshot")
	if dir2 != dir {
		t.Fatalf("second mount at %s, first at %s", dir2, dir)
	}
	wantMounts(t, ctx, a, site, "s1:2")
	must(t, a.Unmount(ctx, site, storage.MustSnap("s1")), "unmount of one user")
	wantMounts(t, ctx, a, site, "s1:1")
	sameTree(t, "still mounted for the other user", HashTree(t, dir), mounted)
	must(t, a.Unmount(ctx, site, storage.MustSnap("s1")), "unmount")
	wantMounts(t, ctx, a, site)
	wantErr(t, a.Unmount(ctx, site, storage.MustSnap("s1")), storage.ErrNoDataset, "second unmount")
	_, err = a.MountReadOnly(ctx, site, storage.MustSnap("nope"))
	wantErr(t, err, storage.ErrNoDataset, "mount missing snapshot")
	must(t, a.Destroy(ctx, site), "destroy after unmount")
}

// wantMounts checks ListMounts against "snapshot:users" entries.
func wantMounts(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, want ...string) {
	t.Helper()
	mounts, err := d.ListMounts(ctx, site)
	must(t, err, "list mounts")
	var got []string
	for _, mt := range mounts {
		if mt.Path == "" {
			t.Fatalf("mount %+v has no path", mt)
		}
		got = append(got, fmt.Sprintf("%s:%d", mt.Snapshot, mt.Users))
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("mounts of %s: got %v, want %v", site, got, want)
	}
}

func testCutStream(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 0)
	before := liveHash(t, ctx, b, site)
	WriteFile(t, ctx, a, site, "big.bin", randomBytes(4<<20))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")
	stream := sendToBuffer(t, ctx, a, site, storage.MustSnap("s1"), storage.MustSnap("s2"))
	for _, cut := range []int{10, len(stream) / 2, len(stream) - 1} {
		_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s1"), bytes.NewReader(stream[:cut]))
		if err == nil {
			t.Fatalf("receive of a stream cut at %d/%d succeeded", cut, len(stream))
		}
		wantSnaps(t, ctx, b, site, "s1")
		sameTree(t, "after cut stream", liveHash(t, ctx, b, site), before)
	}
	// A reader failing mid-stream (connection reset) is a cut too.
	_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s1"), io.MultiReader(bytes.NewReader(stream[:len(stream)/3]), errReader{}))
	if err == nil {
		t.Fatal("receive from a failing reader succeeded")
	}
	wantSnaps(t, ctx, b, site, "s1")
	// Cancellation mid-stream too.
	cctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		_, _ = pw.Write(stream[:len(stream)/2])
		cancel()
		pw.CloseWithError(context.Canceled)
	}()
	_, err = b.Receive(cctx, site, epoch1, storage.MustSnap("s1"), pr)
	if err == nil {
		t.Fatal("cancelled receive succeeded")
	}
	wantSnaps(t, ctx, b, site, "s1")
	sameTree(t, "after cancelled receive", liveHash(t, ctx, b, site), before)
	// The whole stream still applies afterwards: nothing was left half-done.
	_, err = b.Receive(ctx, site, epoch1, storage.MustSnap("s1"), bytes.NewReader(stream))
	must(t, err, "receive whole stream")
	sameTree(t, "after whole stream", liveHash(t, ctx, b, site), liveHash(t, ctx, a, site))
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("connection reset by peer") }

func testOutOfSpace(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 0)
	must(t, b.SetQuota(ctx, site, 4<<20), "set quota")
	WriteFile(t, ctx, a, site, "big.bin", randomBytes(12<<20))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")
	_, err = Transfer(ctx, a, b, site, epoch1, storage.MustSnap("s1"), storage.MustSnap("s2"))
	wantErr(t, err, storage.ErrOutOfSpace, "receive over quota")
	wantSnaps(t, ctx, b, site, "s1")
	u, err := b.Usage(ctx, site)
	must(t, err, "usage")
	if u.QuotaBytes != 4<<20 {
		t.Fatalf("usage quota = %d", u.QuotaBytes)
	}
	must(t, b.SetQuota(ctx, site, 0), "lift quota")
	_, err = Transfer(ctx, a, b, site, epoch1, storage.MustSnap("s1"), storage.MustSnap("s2"))
	must(t, err, "receive without quota")
}

func testSnapshotAll(t *testing.T, ctx context.Context, a, b storage.Driver) {
	var sites []storage.Site
	for _, s := range []string{"a", "b", "c"} {
		site := siteFor(t, s)
		must(t, a.Create(ctx, site, 0), "create")
		WriteFile(t, ctx, a, site, "f", []byte(s))
		sites = append(sites, site)
	}
	done, err := a.SnapshotAll(ctx, storage.MustSnap("tick-1"), sites[:2])
	must(t, err, "snapshot all")
	in := map[string]bool{}
	for _, s := range done {
		in[s.String()] = true
	}
	for _, s := range sites {
		if !in[s.String()] {
			t.Fatalf("SnapshotAll returned %v, missing %s", done, s)
		}
		wantSnapsContain(t, ctx, a, s, "tick-1")
	}
	// A read-only site in the list is refused before anything is done.
	ro := siteFor(t, "ro")
	replicate(t, ctx, b, a, ro, 0)
	_, err = a.SnapshotAll(ctx, storage.MustSnap("tick-2"), []storage.Site{sites[0], ro})
	wantErr(t, err, storage.ErrReadOnly, "snapshot all with a replica listed")
	if names := snapNames(t, ctx, a, sites[0]); len(names) != 1 {
		t.Fatalf("refused SnapshotAll still snapshotted: %v", names)
	}
	_, err = a.SnapshotAll(ctx, storage.MustSnap("tick-3"), []storage.Site{storage.MustSite("missing-site")})
	wantErr(t, err, storage.ErrNoDataset, "snapshot all with a missing site")
	// Replicas are never snapshotted by SnapshotAll (that would break their next receive).
	_, err = a.SnapshotAll(ctx, storage.MustSnap("tick-4"), nil)
	must(t, err, "snapshot all")
	wantSnaps(t, ctx, a, ro, "s1")
}

func wantSnapsContain(t *testing.T, ctx context.Context, d storage.Driver, site storage.Site, name string) {
	t.Helper()
	for _, n := range snapNames(t, ctx, d, site) {
		if n == name {
			return
		}
	}
	t.Fatalf("%s has no snapshot %s", site, name)
}

// An app appends to a file while snapshots are taken and sent (hcdemoapp's
// log): every snapshot is a consistent prefix, its incremental stream
// applies, and the replica ends equal to the master's snapshot.
func testSnapshotWhileAppending(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	must(t, a.Create(ctx, site, 0), "create")
	mp, err := a.Mountpoint(ctx, site)
	must(t, err, "mountpoint")
	f, err := os.OpenFile(filepath.Join(mp, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	must(t, err, "open log")
	const appendBytesMax = 64 << 20 // bounds the appender if the test hangs
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		rec := make([]byte, 1000)
		for written := 0; written < appendBytesMax; written += len(rec) {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := f.Write(rec); err != nil {
				return
			}
		}
	}()
	var prev storage.SnapName
	var last storage.SnapName
	for i := 1; i <= 5; i++ {
		time.Sleep(20 * time.Millisecond)
		last = storage.MustSnap(fmt.Sprintf("s%d", i))
		_, err := a.Snapshot(ctx, site, last)
		must(t, err, "snapshot while appending")
		_, err = Transfer(ctx, a, b, site, epoch1, prev, last)
		must(t, err, "transfer while appending")
		prev = last
	}
	close(stop)
	<-done
	must(t, f.Close(), "close log")
	view, err := a.MountReadOnly(ctx, site, last)
	must(t, err, "mount last snapshot")
	defer func() { _ = a.Unmount(ctx, site, last) }()
	sameTree(t, "replica after snapshots taken while appending", liveHash(t, ctx, b, site), HashTree(t, view))
}

// testPromoteReplica: a replica made writable (a planned move's target
// being promoted) serves exactly its newest snapshot; a write into one of
// its files in place, as a database writes, changes no snapshot (the
// promoted files share nothing writable with the snapshots); the next
// snapshot holds the write and everything else as it was.
func testPromoteReplica(t *testing.T, ctx context.Context, a, b storage.Driver) {
	site := siteFor(t, "x")
	replicate(t, ctx, a, b, site, 0)
	WriteFile(t, ctx, a, site, "index.html", []byte("<h1>second</h1>\n"))
	WriteFile(t, ctx, a, site, "data/new.txt", []byte("added before the move"))
	_, err := a.Snapshot(ctx, site, storage.MustSnap("s2"))
	must(t, err, "snapshot s2")
	_, err = Transfer(ctx, a, b, site, epoch1, storage.MustSnap("s1"), storage.MustSnap("s2"))
	must(t, err, "incremental transfer s2")
	s2 := liveHash(t, ctx, a, site)

	must(t, b.SetReadOnly(ctx, site, false), "promote the replica")
	sameTree(t, "promoted live tree", liveHash(t, ctx, b, site), s2)
	mp, err := b.Mountpoint(ctx, site)
	must(t, err, "mountpoint")
	f, err := os.OpenFile(filepath.Join(mp, "data", "blob.bin"), os.O_WRONLY, 0)
	must(t, err, "open a promoted file for writing")
	_, err = f.WriteAt([]byte("written in place after the promotion"), 4096)
	must(t, err, "write in place")
	must(t, f.Close(), "close")
	after := liveHash(t, ctx, b, site)
	if after["data/blob.bin"] == s2["data/blob.bin"] {
		t.Fatal("the in-place write did not change the live file")
	}
	dir, err := b.MountReadOnly(ctx, site, storage.MustSnap("s2"))
	must(t, err, "mount s2")
	sameTree(t, "s2 after a write into the promoted live tree", HashTree(t, dir), s2)
	must(t, b.Unmount(ctx, site, storage.MustSnap("s2")), "unmount s2")

	_, err = b.Snapshot(ctx, site, storage.MustSnap("s3"))
	must(t, err, "first snapshot after the promotion")
	dir, err = b.MountReadOnly(ctx, site, storage.MustSnap("s3"))
	must(t, err, "mount s3")
	sameTree(t, "s3", HashTree(t, dir), after)
	must(t, b.Unmount(ctx, site, storage.MustSnap("s3")), "unmount s3")
	// And the write after s3 is in no snapshot either.
	f, err = os.OpenFile(filepath.Join(mp, "index.html"), os.O_WRONLY, 0)
	must(t, err, "open index.html")
	_, err = f.WriteAt([]byte("<h1>third"), 0)
	must(t, err, "write index.html in place")
	must(t, f.Close(), "close")
	dir, err = b.MountReadOnly(ctx, site, storage.MustSnap("s3"))
	must(t, err, "mount s3 again")
	sameTree(t, "s3 after a later write", HashTree(t, dir), after)
	must(t, b.Unmount(ctx, site, storage.MustSnap("s3")), "unmount s3 again")
}
