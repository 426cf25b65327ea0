package admin

import (
	"slices"
	"strings"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// This file turns the balancer's cluster view (the last NodeReport of every
// live node) into the API's sites and nodes. Pure functions: no backend, no
// clock.

// PhasePlacing is the phase of a site the balancer has not placed yet.
const PhasePlacing = "placing"

// PhaseFailingOver is the phase of a site whose copies are reported but none
// of them is a master (the master's node is down or the site is between
// masters).
const PhaseFailingOver = "failing_over"

// phaseString is a SitePhase as the API spells it: "active", "pre_copy", ...
func phaseString(p m.SitePhase) string {
	if p == m.SitePhase_SITE_PHASE_UNSPECIFIED {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(p.String(), "SITE_PHASE_"))
}

// roleString is a Role as the API spells it: "master", "replica".
func roleString(r m.Role) string {
	if r == m.Role_ROLE_UNSPECIFIED {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}

// servingPhase reports whether a copy in role MASTER at this phase is the
// site's master (rather than stopped, demoted or failing over).
func servingPhase(p m.SitePhase) bool {
	switch p {
	case m.SitePhase_SITE_PHASE_ACTIVE, m.SitePhase_SITE_PHASE_PRE_COPY, m.SitePhase_SITE_PHASE_PAUSED,
		m.SitePhase_SITE_PHASE_FINAL_DELTA, m.SitePhase_SITE_PHASE_PROMOTING:
		return true
	}
	return false
}

// msTime is a message time in milliseconds as a UTC time; 0 is the zero time.
func msTime(ms int64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms).UTC()
}

func snapshotOf(r *m.SnapshotRef) *Snapshot {
	if r == nil {
		return nil
	}
	return &Snapshot{Name: r.GetName(), Epoch: core.EpochString(r.GetEpoch()), Seq: r.GetSeq(), TakenAt: msTime(r.GetTakenMs())}
}

// reportedCopy is one DatasetInfo with the node and time of its report.
type reportedCopy struct {
	node string
	info *m.DatasetInfo
	atMs int64
}

// lagSeconds is how far a replica's newest snapshot is behind the master's,
// in seconds, never negative. A replica holding no snapshot has no lag
// figure (its Latest is nil) and counts as 0.
func lagSeconds(master, replica *m.SnapshotRef) float64 {
	if master == nil || replica == nil {
		return 0
	}
	return max(0, float64(master.GetTakenMs()-replica.GetTakenMs())/1000)
}

func userNames[U interface{ GetName() string }](us []U) []string {
	if len(us) == 0 {
		return nil
	}
	names := make([]string, 0, len(us))
	for _, u := range us {
		names = append(names, u.GetName())
	}
	return names
}

// specSite fills the fields of a Site that come from its spec: never a
// password (the spec holds only hashes, and those are not returned either).
func specSite(name string, spec *m.SiteSpec) Site {
	s := Site{Name: name, Domains: []string{}, Replicas: []string{}, Copies: []Copy{}}
	if spec == nil {
		return s
	}
	if len(spec.GetDomains()) > 0 {
		s.Domains = slices.Clone(spec.GetDomains())
	}
	s.AppCommand = spec.GetAppCommand()
	s.QuotaBytes = spec.GetQuotaBytes()
	s.FTPUsers = userNames(spec.GetFtpUsers())
	s.MySQLUsers = userNames(spec.GetMysqlUsers())
	s.TLS = core.HasTLS(spec) // a report's spec has the digest in their place
	return s
}

// pendingSite is a site the balancer has been asked to create and has not
// placed yet.
func pendingSite(spec *m.SiteSpec, atMs int64) Site {
	s := specSite(spec.GetName(), spec)
	s.Phase = PhasePlacing
	s.Epoch = core.EpochString(nil)
	s.ReportedAt = msTime(atMs)
	return s
}

// chooseMaster picks the master among a site's copies: role MASTER, a
// serving phase, the highest epoch (term, then node); nil if none qualifies.
func chooseMaster(copies []reportedCopy) *reportedCopy {
	var best *reportedCopy
	for i := range copies {
		c := &copies[i]
		if c.info.GetRole() != m.Role_ROLE_MASTER || !servingPhase(c.info.GetPhase()) {
			continue
		}
		if best == nil {
			best = c
			continue
		}
		switch cmp := core.CompareEpoch(c.info.GetEpoch(), best.info.GetEpoch()); {
		case cmp > 0, cmp == 0 && c.node < best.node:
			best = c
		}
	}
	return best
}

// buildSite is one site from its reported copies.
func buildSite(name string, copies []reportedCopy) Site {
	slices.SortFunc(copies, func(a, b reportedCopy) int { return strings.Compare(a.node, b.node) })
	master := chooseMaster(copies)

	// The spec: the master's, else that of the copy at the highest epoch.
	var spec *m.SiteSpec
	var top *reportedCopy // the copy at the highest epoch
	for i := range copies {
		c := &copies[i]
		if top == nil || core.CompareEpoch(c.info.GetEpoch(), top.info.GetEpoch()) > 0 {
			top = c
		}
	}
	switch {
	case master != nil && master.info.GetSpec() != nil:
		spec = master.info.GetSpec()
	default:
		var specEpoch *m.Epoch
		for _, c := range copies {
			if c.info.GetSpec() != nil && (spec == nil || core.CompareEpoch(c.info.GetEpoch(), specEpoch) > 0) {
				spec, specEpoch = c.info.GetSpec(), c.info.GetEpoch()
			}
		}
	}

	s := specSite(name, spec)
	var masterLatest *m.SnapshotRef
	if master != nil {
		s.Master = master.node
		s.Phase = phaseString(master.info.GetPhase())
		s.Epoch = core.EpochString(master.info.GetEpoch())
		masterLatest = master.info.GetLatest()
		s.LastSnapshot = snapshotOf(masterLatest)
		s.FTPLeases = master.info.GetFtpLeases()
		s.ProcessError = master.info.GetProcessError()
		s.ReportedAt = msTime(master.atMs)
	} else {
		s.Phase = PhaseFailingOver
		s.Epoch = core.EpochString(top.info.GetEpoch())
		var newest *m.SnapshotRef
		var at int64
		for _, c := range copies {
			if core.Newer(c.info.GetLatest(), newest) {
				newest = c.info.GetLatest()
			}
			at = max(at, c.atMs)
		}
		s.LastSnapshot = snapshotOf(newest)
		s.ReportedAt = msTime(at)
	}
	for _, c := range copies {
		cp := Copy{
			Node: c.node, Role: "replica", Phase: phaseString(c.info.GetPhase()),
			Epoch: core.EpochString(c.info.GetEpoch()), Latest: snapshotOf(c.info.GetLatest()),
			Bytes: c.info.GetBytes(), Stashes: c.info.GetStashes(), Snapshots: c.info.GetSnapshots(),
		}
		if master == nil {
			cp.ActivationError = c.info.GetActivationError()
		}
		if master != nil && c.node == master.node {
			cp.Role = "master"
		} else {
			s.Replicas = append(s.Replicas, c.node)
			if master != nil {
				cp.LagS = lagSeconds(masterLatest, c.info.GetLatest())
				s.LagS = max(s.LagS, cp.LagS)
				cp.ReplicationError = master.info.GetReplicaErrors()[c.node]
			}
		}
		s.Copies = append(s.Copies, cp)
	}
	return s
}

// buildSites is every site of the cluster view, sorted by name: those with
// reported copies, then the pending creates not placed yet. A deleted site
// is left out: the copies that record its tombstone, and copies of its
// history from before the tombstone (a node that missed the deletion),
// are not copies of any site (a site created again after it shows with its
// new copies only).
func buildSites(v *m.AdminView) []Site {
	tombs := map[string]*m.Epoch{}
	for _, r := range v.GetReports() {
		for _, d := range r.GetDatasets() {
			if d.GetRole() == m.Role_ROLE_DELETED {
				tombs[d.GetSite()] = core.MaxEpoch(tombs[d.GetSite()], d.GetEpoch())
			}
		}
	}
	bySite := map[string][]reportedCopy{}
	for _, r := range v.GetReports() {
		for _, d := range r.GetDatasets() {
			if d.GetSite() == "" || d.GetRole() == m.Role_ROLE_DELETED {
				continue
			}
			if t := tombs[d.GetSite()]; t != nil && !core.CreatedAfter(d.GetSpec(), t) {
				continue
			}
			node := d.GetNode()
			if node == "" {
				node = r.GetNode()
			}
			if slices.ContainsFunc(bySite[d.GetSite()], func(c reportedCopy) bool { return c.node == node }) {
				continue // one copy per node; a duplicate entry is ignored
			}
			bySite[d.GetSite()] = append(bySite[d.GetSite()], reportedCopy{node: node, info: d, atMs: r.GetAtMs()})
		}
	}
	sites := make([]Site, 0, len(bySite)+len(v.GetPendingCreates()))
	for name, copies := range bySite {
		sites = append(sites, buildSite(name, copies))
	}
	for _, spec := range v.GetPendingCreates() {
		if _, placed := bySite[spec.GetName()]; placed || spec.GetName() == "" {
			continue
		}
		if slices.ContainsFunc(sites, func(s Site) bool { return s.Name == spec.GetName() }) {
			continue
		}
		sites = append(sites, pendingSite(spec, v.GetAtMs()))
	}
	slices.SortFunc(sites, func(a, b Site) int { return strings.Compare(a.Name, b.Name) })
	return sites
}

// findSite is the named site of the view, or false.
func findSite(v *m.AdminView, name string) (Site, bool) {
	for _, s := range buildSites(v) {
		if s.Name == name {
			return s, true
		}
	}
	return Site{}, false
}

// buildNodes is every configured member with what the view says of it.
func buildNodes(members []string, v *m.AdminView) []Node {
	reports := map[string]*m.NodeReport{}
	for _, r := range v.GetReports() {
		reports[r.GetNode()] = r
	}
	nodes := make([]Node, 0, len(members))
	for _, name := range members {
		n := Node{
			Name:     name,
			Live:     slices.Contains(v.GetLive(), name),
			Draining: slices.Contains(v.GetDraining(), name),
			Balancer: name != "" && name == v.GetBalancer(),
		}
		if r := reports[name]; r != nil {
			n.Load = r.GetLoad()
			n.FreeBytes, n.SizeBytes = r.GetFreeBytes(), r.GetSizeBytes()
			n.Draining = n.Draining || r.GetDraining()
			n.ReportedAt = msTime(r.GetAtMs())
			for _, d := range r.GetDatasets() {
				switch d.GetRole() {
				case m.Role_ROLE_MASTER:
					n.Masters++
				case m.Role_ROLE_REPLICA:
					n.Replicas++
				}
			}
		}
		nodes = append(nodes, n)
	}
	return nodes
}
