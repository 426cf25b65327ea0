package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
	"github.com/hybridcluster/hybridcluster/runtime/admin/admintest"
)

// mount prints the directory alone on stdout (for `cd $(hcctl mount ...)`)
// and the node on stderr; unmount ends it; --json prints the answer.
func TestMountUnmount(t *testing.T) {
	srv := endpoint(t, admintest.Sample())
	r := hcctl(srv, "mount", "shop", "e100-n1-s2").ok(t)
	if got, want := strings.TrimSpace(r.stdout), admintest.MountPath("shop", "e100-n1-s2"); got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
	if !strings.Contains(r.stderr, "node n1") {
		t.Fatalf("stderr %q names no node", r.stderr)
	}
	r = hcctl(srv, "--json", "mount", "shop", "e100-n1-s2").ok(t)
	var mt admin.Mount
	if err := json.Unmarshal([]byte(r.stdout), &mt); err != nil || mt.Node != "n1" || mt.Snapshot != "e100-n1-s2" {
		t.Fatalf("json %q: %+v %v", r.stdout, mt, err)
	}
	r = hcctl(srv, "unmount", "shop", "e100-n1-s2").ok(t)
	if !strings.Contains(r.stdout, "unmounted") {
		t.Fatalf("stdout %q", r.stdout)
	}
	if r = hcctl(srv, "unmount", "shop", "e100-n1-s2"); r.code != 1 || !strings.Contains(r.stderr, "not mounted") {
		t.Fatalf("second unmount: %+v", r)
	}
	if r = hcctl(srv, "mount", "shop", "hc:safety"); r.code != 1 || !strings.Contains(r.stderr, "bad_request") {
		t.Fatalf("bad name: %+v", r)
	}
	if r = hcctl(srv, "mount", "shop"); r.code != 2 {
		t.Fatalf("missing argument: %+v", r)
	}
}
