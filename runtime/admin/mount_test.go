package admin_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/admin/admintest"
)

// Mounting a snapshot is a MOUNT query to the dataset actor of the site's
// master, answered with the view's path; unmounting (DELETE) ends it. Names
// are validated before anything is asked; the actors' refusals map to 404,
// 409 and 503.
func TestMountUnmount(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	st, body := fx.do("POST", "/v1/sites/shop/snapshots/e100-n1-s2/mount", "")
	if st != http.StatusOK {
		t.Fatalf("mount: %d %s", st, body)
	}
	mt := decodeAs[admin.Mount](t, body)
	if mt.Site != "shop" || mt.Snapshot != "e100-n1-s2" || mt.Node != "n1" || mt.Path != admintest.MountPath("shop", "e100-n1-s2") {
		t.Fatalf("mount answer %+v", mt)
	}
	var mounts []admintest.Query
	for _, q := range fx.f.Queries() {
		if q.Q.GetKind() == m.AdminQueryKind_ADMIN_QUERY_MOUNT {
			mounts = append(mounts, q)
		}
	}
	if len(mounts) != 1 || mounts[0].To != core.DatasetAddr("n1", "shop") || mounts[0].Q.GetSnapshot() != "e100-n1-s2" || mounts[0].Q.GetSite() != "shop" {
		t.Fatalf("mount queries %+v", mounts)
	}

	// The snapshot list says where it is mounted, until it is unmounted.
	mountedAt := func() map[string]string {
		t.Helper()
		st, body := fx.do("GET", "/v1/sites/shop/snapshots", "")
		if st != http.StatusOK {
			t.Fatalf("snapshots: %d %s", st, body)
		}
		out := map[string]string{}
		for _, s := range decodeAs[admin.SnapshotList](t, body).Snapshots {
			if s.MountPath != "" {
				out[s.Name] = s.MountPath
			}
		}
		return out
	}
	if got := mountedAt(); len(got) != 1 || got["e100-n1-s2"] != admintest.MountPath("shop", "e100-n1-s2") {
		t.Fatalf("mounted snapshots listed: %v", got)
	}

	st, body = fx.do("DELETE", "/v1/sites/shop/snapshots/e100-n1-s2/mount", "")
	if st != http.StatusOK {
		t.Fatalf("unmount: %d %s", st, body)
	}
	if got := mountedAt(); len(got) != 0 {
		t.Fatalf("mounted snapshots listed after unmount: %v", got)
	}
	// Not mounted any more: storage refuses.
	st, body = fx.do("DELETE", "/v1/sites/shop/snapshots/e100-n1-s2/mount", "")
	wantError(t, st, body, http.StatusConflict, admin.CodeConflict)
	// No such snapshot on the master.
	st, body = fx.do("POST", "/v1/sites/shop/snapshots/e100-n1-s9/mount", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	// No such site; a site without a master now.
	st, body = fx.do("POST", "/v1/sites/nosuch/snapshots/e1-n1-s1/mount", "")
	wantError(t, st, body, http.StatusNotFound, admin.CodeNotFound)
	st, body = fx.do("POST", "/v1/sites/wiki/snapshots/e90-n4-s5/mount", "")
	wantError(t, st, body, http.StatusServiceUnavailable, admin.CodeUnavailable)

	// Bad snapshot names never reach an actor.
	before := len(fx.f.Queries())
	for _, bad := range []string{"hc:safety", "-rf", "A", "x@y", "a%2Fb", "a..b"} {
		st, body = fx.do("POST", "/v1/sites/shop/snapshots/"+bad+"/mount", "")
		wantError(t, st, body, http.StatusBadRequest, admin.CodeBadRequest)
	}
	if after := len(fx.f.Queries()); after != before {
		t.Fatalf("%d queries made for bad names", after-before)
	}
	if sent := fx.f.Sent(); len(sent) != 0 {
		t.Fatalf("sent %v", sent)
	}

	// The master's copy answering MOVED (it stopped being master meanwhile).
	fx.f.OnQuery = func(ctx context.Context, to core.Address, q *m.AdminQuery) (*m.AdminView, error) {
		if q.GetKind() == m.AdminQueryKind_ADMIN_QUERY_CLUSTER {
			return fx.f.Cluster(), nil
		}
		return &m.AdminView{QueryId: q.QueryId, Code: m.Code_CODE_MOVED, Node: to.Node, Detail: "not master"}, nil
	}
	st, body = fx.do("POST", "/v1/sites/shop/snapshots/e100-n1-s2/mount", "")
	wantError(t, st, body, http.StatusServiceUnavailable, admin.CodeUnavailable)
}

func TestClientMount(t *testing.T) {
	fx := newFixture(t, admintest.Sample())
	srv := httptest.NewServer(fx.h)
	defer srv.Close()
	c := admin.NewClient(srv.URL, token, nil)
	ctx := context.Background()
	mt, err := c.Mount(ctx, "shop", "e100-n1-s1")
	if err != nil || mt.Path != admintest.MountPath("shop", "e100-n1-s1") || mt.Node != "n1" {
		t.Fatalf("mount %+v %v", mt, err)
	}
	if err := c.Unmount(ctx, "shop", "e100-n1-s1"); err != nil {
		t.Fatal(err)
	}
	wantAPIError(t, c.Unmount(ctx, "shop", "e100-n1-s1"), 409, admin.CodeConflict)
	// A name that would escape the path is escaped, and refused.
	_, err = c.Mount(ctx, "shop", "../../../nodes/n1/drain")
	wantAPIError(t, err, 400, admin.CodeBadRequest)
}
