package host

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// catalog keeps, per site, what a storage.Driver does not: the dataset's
// role and the site's spec, and for a deleted site its tombstone (the epoch
// of the deletion, kept even where no dataset exists: every node records
// it, so that whichever becomes balancer knows the site was deleted); and
// the node's incarnation counter. One small JSON file per site under
// <dir>/sites, written atomically.
type catalog struct {
	dir  string
	mu   sync.Mutex
	recs map[string]*siteRecord
}

type siteRecord struct {
	role m.Role
	spec *m.SiteSpec
	// tombstone is the epoch of the site's deletion (role ROLE_DELETED).
	tombstone *m.Epoch
	// mounts are the snapshots an admin mounted read-only and did not
	// unmount: boot re-establishes them (mountsAtBoot).
	mounts []string
}

type siteRecordJSON struct {
	Role      string          `json:"role"`
	Spec      json.RawMessage `json:"spec,omitempty"`
	Tombstone *epochJSON      `json:"tombstone,omitempty"`
	Mounts    []string        `json:"mounts,omitempty"`
}

type epochJSON struct {
	Term uint64 `json:"term"`
	Node string `json:"node"`
}

func openCatalog(dir string) (*catalog, error) {
	c := &catalog{dir: dir, recs: map[string]*siteRecord{}}
	if err := os.MkdirAll(filepath.Join(dir, "sites"), 0o755); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", dir, err)
	}
	ents, err := os.ReadDir(filepath.Join(dir, "sites"))
	if err != nil {
		return nil, fmt.Errorf("catalog %s: %w", dir, err)
	}
	for _, e := range ents {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok {
			continue
		}
		if _, err := storage.ParseSite(name); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(dir, "sites", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("catalog %s: %w", dir, err)
		}
		var j siteRecordJSON
		if err := json.Unmarshal(data, &j); err != nil {
			return nil, fmt.Errorf("catalog %s: site %s: %w", dir, name, err)
		}
		rec := &siteRecord{role: m.Role(m.Role_value[j.Role]), mounts: j.Mounts}
		if j.Tombstone != nil {
			rec.tombstone = &m.Epoch{Term: j.Tombstone.Term, Node: j.Tombstone.Node}
		}
		if len(j.Spec) > 0 {
			rec.spec = &m.SiteSpec{}
			if err := protojson.Unmarshal(j.Spec, rec.spec); err != nil {
				return nil, fmt.Errorf("catalog %s: site %s spec: %w", dir, name, err)
			}
		}
		c.recs[name] = rec
	}
	return c, nil
}

// nextIncarnation increments and persists the start counter.
func (c *catalog) nextIncarnation() (uint64, error) {
	path := filepath.Join(c.dir, "incarnation")
	var n uint64
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return 0, fmt.Errorf("incarnation: %w", err)
	default:
		if n, err = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64); err != nil {
			return 0, fmt.Errorf("incarnation %s: %w", path, err)
		}
	}
	n++
	if err := writeAtomic(path, []byte(strconv.FormatUint(n, 10)+"\n")); err != nil {
		return 0, fmt.Errorf("incarnation: %w", err)
	}
	return n, nil
}

func (c *catalog) sites() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]string, 0, len(c.recs))
	for s := range c.recs {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

func (c *catalog) get(site string) siteRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.recs[site]; r != nil {
		return *r
	}
	return siteRecord{}
}

// put records role and, when not nil, spec (any other role than deleted
// ends a tombstone: the site was created again).
func (c *catalog) put(site string, role m.Role, spec *m.SiteSpec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.recs[site]
	if r == nil {
		r = &siteRecord{}
	}
	next := *r
	next.role = role
	if spec != nil {
		next.spec = spec
	}
	if role != m.Role_ROLE_DELETED {
		next.tombstone = nil
	}
	return c.writeLocked(site, &next)
}

// putTombstone records that the site was deleted at epoch.
func (c *catalog) putTombstone(site string, epoch *m.Epoch) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	next := siteRecord{role: m.Role_ROLE_DELETED, tombstone: epoch}
	if r := c.recs[site]; r != nil {
		next.spec = r.spec
	}
	return c.writeLocked(site, &next)
}

// ensure records site with role unless it is recorded already.
func (c *catalog) ensure(site string, role m.Role) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.recs[site] != nil {
		return nil
	}
	return c.writeLocked(site, &siteRecord{role: role})
}

// ensureReplica records site as a replica unless it is recorded already as
// a live copy: a copy that was deleted becomes a replica again when a
// stream of a history created since arrives.
func (c *catalog) ensureReplica(site string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if r := c.recs[site]; r != nil && r.role != m.Role_ROLE_DELETED {
		return nil
	}
	return c.writeLocked(site, &siteRecord{role: m.Role_ROLE_REPLICA})
}

// setSpec records spec if it differs from the recorded one.
func (c *catalog) setSpec(site string, spec *m.SiteSpec) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.recs[site]
	if r != nil && proto.Equal(r.spec, spec) {
		return nil
	}
	next := siteRecord{role: m.Role_ROLE_REPLICA, spec: spec}
	if r != nil && r.role != m.Role_ROLE_DELETED {
		next.role = r.role
		next.mounts = r.mounts
	}
	return c.writeLocked(site, &next)
}

// setMount records that an admin mounted snapshot snap of site (mounted)
// or unmounted it.
func (c *catalog) setMount(site, snap string, mounted bool) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.recs[site]
	if r == nil {
		r = &siteRecord{}
	}
	if slices.Contains(r.mounts, snap) == mounted {
		return nil
	}
	next := *r
	next.mounts = slices.DeleteFunc(slices.Clone(r.mounts), func(s string) bool { return s == snap })
	if mounted {
		next.mounts = append(next.mounts, snap)
		slices.Sort(next.mounts)
	}
	return c.writeLocked(site, &next)
}

func (c *catalog) writeLocked(site string, r *siteRecord) error {
	if _, err := storage.ParseSite(site); err != nil {
		return err
	}
	j := siteRecordJSON{Role: r.role.String(), Mounts: r.mounts}
	if r.tombstone != nil {
		j.Tombstone = &epochJSON{Term: r.tombstone.Term, Node: r.tombstone.Node}
	}
	if r.spec != nil {
		spec, err := protojson.Marshal(r.spec)
		if err != nil {
			return err
		}
		j.Spec = spec
	}
	data, err := json.Marshal(j)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(c.dir, "sites", site+".json"), data); err != nil {
		return err
	}
	c.recs[site] = r
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
	}
	return err
}
