package admin_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/admin/admintest"
)

func newClient(t *testing.T) (*admin.Client, *fixture) {
	t.Helper()
	fx := newFixture(t, admintest.Sample())
	srv := httptest.NewServer(fx.h)
	t.Cleanup(srv.Close)
	return admin.NewClient(srv.URL+"/", token, srv.Client()), fx
}

func wantAPIError(t *testing.T, err error, status int, code string) {
	t.Helper()
	var ae *admin.APIError
	if !errors.As(err, &ae) || ae.Status != status || ae.Code != code || ae.Message == "" {
		t.Fatalf("error %v (%#v), want %d %s", err, err, status, code)
	}
}

func TestClientCalls(t *testing.T) {
	c, fx := newClient(t)
	ctx := context.Background()

	sites, err := c.Sites(ctx)
	if err != nil || len(sites) != 5 {
		t.Fatalf("sites %v %v", sites, err)
	}
	s, err := c.Site(ctx, "shop")
	if err != nil || s.Master != "n1" {
		t.Fatalf("site %+v %v", s, err)
	}
	_, err = c.Site(ctx, "nosuch")
	wantAPIError(t, err, 404, admin.CodeNotFound)
	if err.Error() != "not_found: no such site" {
		t.Fatalf("message %q", err)
	}

	created, err := c.CreateSite(ctx, admin.CreateSite{Name: "new", Domains: []string{"new.example"}})
	if err != nil || created.Phase != "placing" {
		t.Fatalf("create %+v %v", created, err)
	}
	_, err = c.CreateSite(ctx, admin.CreateSite{Name: "shop", Domains: []string{"x.example"}})
	wantAPIError(t, err, 409, admin.CodeConflict)

	if _, err := c.Migrate(ctx, "shop", "n2"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Migrate(ctx, "shop", "n9")
	wantAPIError(t, err, 404, admin.CodeNotFound)

	snaps, err := c.Snapshots(ctx, "shop")
	if err != nil || len(snaps.Snapshots) != 3 || snaps.Node != "n1" {
		t.Fatalf("snapshots %+v %v", snaps, err)
	}
	if err := c.TakeSnapshot(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rollback(ctx, "shop", "e100-n1-s1"); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, c.Rollback(ctx, "shop", "nope"), 404, admin.CodeNotFound)
	st, err := c.Stash(ctx, "shop")
	if err != nil || len(st.Stashes) != 1 {
		t.Fatalf("stash %+v %v", st, err)
	}
	if err := c.RestoreStash(ctx, "shop", st.Stashes[0]); err != nil {
		t.Fatal(err)
	}
	// A name that would escape the path is escaped, and not found.
	wantAPIError(t, c.RestoreStash(ctx, "shop", "../../nodes/n1/drain"), 404, admin.CodeNotFound)
	nodes, err := c.Nodes(ctx)
	if err != nil || len(nodes) != 4 {
		t.Fatalf("nodes %+v %v", nodes, err)
	}
	if err := c.Drain(ctx, "n3"); err != nil {
		t.Fatal(err)
	}
	h, err := c.Health(ctx)
	if err != nil || h.Node != "n1" || !h.OK {
		t.Fatalf("health %+v %v", h, err)
	}

	want := []admintest.Sent{
		{To: core.NodeAddr("n1"), Msg: &m.CreateSite{Spec: &m.SiteSpec{Name: "new", Domains: []string{"new.example"}}}},
		{To: core.SiteAddr("n1", "shop"), Msg: &m.Migrate{Site: "shop", Target: "n2", Reason: "admin"}},
		{To: core.SiteAddr("n1", "shop"), Msg: &m.AdminSnapshot{Site: "shop"}},
		{To: core.SiteAddr("n1", "shop"), Msg: &m.AdminRollback{Site: "shop", Snapshot: "e100-n1-s1"}},
		{To: core.SiteAddr("n1", "shop"), Msg: &m.AdminRestoreStash{Site: "shop", Stash: "stash-e90-n4-1"}},
		{To: core.NodeAddr("n3"), Msg: &m.DrainNode{Node: "n3"}},
	}
	sent := fx.f.Sent()
	if len(sent) != len(want) {
		t.Fatalf("sent %v", sent)
	}
	for i := range want {
		if sent[i].To != want[i].To || !proto.Equal(sent[i].Msg, want[i].Msg) {
			t.Errorf("sent[%d] = %v to %v, want %v to %v", i, sent[i].Msg, sent[i].To, want[i].Msg, want[i].To)
		}
	}
}

func TestClientErrors(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	srv := httptest.NewServer(fx.h)
	defer srv.Close()
	_, err := admin.NewClient(srv.URL, "wrong", nil).Sites(context.Background())
	wantAPIError(t, err, 401, admin.CodeUnauthorized)

	// A proxy's plain-text error still comes back as an APIError.
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "bad gateway from proxy", http.StatusBadGateway)
	}))
	defer plain.Close()
	_, err = admin.NewClient(plain.URL, token, nil).Nodes(context.Background())
	wantAPIError(t, err, 502, admin.CodeUnavailable)
	var ae *admin.APIError
	if errors.As(err, &ae); ae.Message != "bad gateway from proxy" {
		t.Fatalf("message %q", ae.Message)
	}
}

func TestClientEvents(t *testing.T) {
	c, fx := newClient(t)
	fx.s.SetEventLimits(admin.MaxEventStreams, 10*time.Millisecond) // pings are skipped
	go func() {
		until(func() bool { return fx.f.Subscribers() == 1 })
		for _, site := range []string{"a", "b", "c"} {
			fx.f.Publish(admin.Event{Type: "route", Site: site, Master: "n2"})
			time.Sleep(15 * time.Millisecond)
		}
	}()
	var got []admin.Event
	errStop := errors.New("stop")
	err := c.Events(context.Background(), func(ev admin.Event) error {
		got = append(got, ev)
		if len(got) == 3 {
			return errStop
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Events returned %v", err)
	}
	if got[0].Type != "route" || got[0].Site != "a" || got[2].Site != "c" {
		t.Fatalf("events %+v", got)
	}
	waitFor(t, "the subscription to end", func() bool { return fx.f.Subscribers() == 0 })

	// Cancelling the context ends Events with the context's error.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Events(ctx, func(admin.Event) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Events after the deadline: %v", err)
	}
	waitFor(t, "the subscription to end", func() bool { return fx.f.Subscribers() == 0 })
	// The backend dropping the subscriber ends Events with nil.
	go func() {
		until(func() bool { return fx.f.Subscribers() == 1 })
		fx.f.DropSubscribers()
	}()
	if err := c.Events(context.Background(), func(admin.Event) error { return nil }); err != nil {
		t.Fatalf("Events after a drop: %v", err)
	}
}

// until polls cond for up to 5 s (for goroutines other than the test's).
func until(cond func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return false
}
