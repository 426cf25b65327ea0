package node

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// The host's word on a site's processes reaches the balancer in the
// master's entry of the node's reports, and goes when the host clears it; a
// replica's entry never carries one.
func TestReportsCarryTheMastersProcessError(t *testing.T) {
	cfg := core.Default()
	n := New("n1")
	env := &core.Env{Self: core.NodeAddr("n1"), Now: time.Unix(1000, 0), Config: cfg}
	n.Step(env, &m.NodeBoot{Node: "n1", Members: []string{"n1", "n2"}})
	n.Step(env, &m.DatasetInfo{Site: "shop", Node: "n1", Role: m.Role_ROLE_MASTER})
	n.Step(env, &m.DatasetInfo{Site: "blog", Node: "n1", Role: m.Role_ROLE_REPLICA})
	errs := func() map[string]string {
		out := map[string]string{}
		for _, d := range n.report(env).Datasets {
			out[d.Site] = d.ProcessError
		}
		return out
	}
	if got := errs(); got["shop"] != "" || got["blog"] != "" {
		t.Fatalf("errors before the host said any: %v", got)
	}
	const failing = "app: start: no such file or directory"
	n.Step(env, &m.ProcessHealth{Site: "shop", Error: failing})
	n.Step(env, &m.ProcessHealth{Site: "blog", Error: "left from when it was master"})
	if got := errs(); got["shop"] != failing || got["blog"] != "" {
		t.Fatalf("reported errors %v, want the master's only", got)
	}
	// An unchanged entry is sent again as it was; a change is not missed.
	if got := errs(); got["shop"] != failing {
		t.Fatalf("the next report lost the error: %v", got)
	}
	n.Step(env, &m.ProcessHealth{Site: "shop"})
	if got := errs(); got["shop"] != "" {
		t.Fatalf("the error stayed after the host cleared it: %v", got)
	}
	if len(n.procErr) != 1 { // blog's, until the host clears it too
		t.Fatalf("kept %d errors, want 1", len(n.procErr))
	}
}

// A copy's failed takeover reaches the balancer in the node's report.
func TestReportsCarryACopysFailedTakeover(t *testing.T) {
	cfg := core.Default()
	n := New("n1")
	env := &core.Env{Self: core.NodeAddr("n1"), Now: time.Unix(1000, 0), Config: cfg}
	n.Step(env, &m.NodeBoot{Node: "n1", Members: []string{"n1", "n2"}})
	const why = "promote wiki: zfs mount: directory is not empty"
	n.Step(env, &m.DatasetInfo{Site: "wiki", Node: "n1", Role: m.Role_ROLE_REPLICA, ActivationError: why})
	ds := n.report(env).Datasets
	if len(ds) != 1 || ds[0].ActivationError != why {
		t.Fatalf("report %v, want the copy's failed takeover", ds)
	}
}
