package sites

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// An app that cannot stay up is reported failing, with the reason and a
// count, until it accepts connections again; a healthy site is never in
// the report.
func TestFailuresSayWhyAnAppIsNotUp(t *testing.T) {
	s := newSupervisor(t, Config{RestartBackoffMin: 50 * time.Millisecond, RestartBackoffMax: 200 * time.Millisecond, StartWaitMax: 300 * time.Millisecond})
	appSite(t, s, "healthy")
	dir := appDir(t)
	// Exits until the operator's fix (the file "ok") is there.
	cmd := "test -e ok || exit 3; exec '" + demoApp + "'"
	if err := s.Start("crashy", &m.SiteSpec{Name: "crashy", AppCommand: cmd}, dir); err != nil {
		t.Fatal(err)
	}
	healthy, crashy := serveSite(t, s, "healthy"), serveSite(t, s, "crashy")
	if r := get(t, healthy+"/health"); r.status != http.StatusOK {
		t.Fatalf("the healthy site: %d", r.status)
	}
	if f := s.Failures(); len(f) != 0 {
		t.Fatalf("failures before any: %v", f)
	}
	_ = get(t, crashy+"/") // starts it; it fails
	waitFor(t, "two failures reported", func() bool {
		var n int
		_, after, _ := strings.Cut(s.Failures()["crashy"], "(")
		_, err := fmt.Sscanf(after, "%d failures since", &n)
		return err == nil && n >= 2
	})
	f := s.Failures()
	if got := f["crashy"]; !strings.HasPrefix(got, "app exited: exit status 3") {
		t.Fatalf("crashy's failure: %q", got)
	}
	if _, ok := f["healthy"]; ok || len(f) != 1 {
		t.Fatalf("failures %v, want crashy's only", f)
	}
	if err := os.WriteFile(filepath.Join(dir, "ok"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the fixed app to serve", func() bool { return get(t, crashy+"/health").status == http.StatusOK })
	if f := s.Failures(); len(f) != 0 {
		t.Fatalf("failures once the app is up: %v", f)
	}

	// A start that cannot even run the command (its directory is gone).
	gone := appDir(t)
	if err := s.Start("gone", &m.SiteSpec{Name: "gone", AppCommand: "exec '" + demoApp + "'"}, gone); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(gone); err != nil {
		t.Fatal(err)
	}
	_ = get(t, serveSite(t, s, "gone")+"/")
	waitFor(t, "the failed start reported", func() bool { return strings.HasPrefix(s.Failures()["gone"], "app start: site directory: ") })
	// Stopped (a demotion): no longer this node's to report.
	s.Stop("gone")
	if _, ok := s.Failures()["gone"]; ok {
		t.Fatalf("a stopped site is still reported failing: %v", s.Failures())
	}
}

// A site whose mariadbd cannot start is reported failing, with the
// start's error, from the first connection that asked for it.
func TestFailuresSayWhyMariadbdIsNotUp(t *testing.T) {
	s := newMySQLSupervisor(t)
	dir := t.TempDir()
	// The server's directory is a file: no start can use it.
	if err := os.WriteFile(filepath.Join(dir, "mysql"), []byte("not a directory"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.Start("shop", mysqlSpec(), dir); err != nil {
		t.Fatal(err)
	}
	if f := s.Failures(); len(f) != 0 {
		t.Fatalf("failures before any connection: %v", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for range 2 {
		if c, err := s.DialMySQL(ctx, "shop"); err == nil {
			c.Close()
			t.Fatal("a connection to a server that cannot start")
		}
	}
	got := s.Failures()["shop"]
	if !strings.HasPrefix(got, "mariadbd start: mysql shop: ") || !strings.Contains(got, "not a directory") || !strings.Contains(got, "(2 failures since") {
		t.Fatalf("shop's failure: %q", got)
	}
	s.Stop("shop")
	if f := s.Failures(); len(f) != 0 {
		t.Fatalf("failures after the stop: %v", f)
	}
}
