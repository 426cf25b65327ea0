package portable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Listing a site's snapshots needs only each manifest's head (name, GUID,
// creation, order, size), but a manifest also holds every file's block
// hashes: about 100 KB of JSON for a 256 MiB dataset. A stream lists the
// snapshots on both ends before it starts, so a planned move's final delta
// (inside the pause) parsed every retained manifest twice: 20-40 ms on a
// 2-core machine, growing with the snapshots kept. The heads are cached
// per manifest file, checked against the file's identity (manifests are
// replaced by rename, so a rewrite is a new inode with a new ctime) on
// every listing.

// manifestHeadsSitesMax bounds the sites whose heads are cached; at the
// bound the cache is emptied and refills as sites are listed again.
const manifestHeadsSitesMax = 100_000

type manifestHead struct {
	name    string
	guid    uint64
	created time.Time
	seq     uint64
	bytes   int64
}

type fileIdentity struct {
	ino              uint64
	size             int64
	mtimeNs, ctimeNs int64
}

type cachedHead struct {
	id   fileIdentity
	head manifestHead
}

type headCache struct {
	mu    sync.Mutex
	sites map[string]map[string]cachedHead // site -> snapshot dir name -> head
}

func identityOf(fi fs.FileInfo) fileIdentity {
	id := fileIdentity{size: fi.Size(), mtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		id.ino, id.ctimeNs = st.Ino, st.Ctim.Sec*1e9+st.Ctim.Nsec
	}
	return id
}

// listHeads returns the heads of a site's snapshot manifests, oldest first.
func (d *Driver) listHeads(site storage.Site) ([]manifestHead, error) {
	dir := filepath.Join(d.siteDir(site), "snaps")
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: site %s", storage.ErrNoDataset, site)
	}
	if err != nil {
		return nil, err
	}
	d.heads.mu.Lock()
	old := d.heads.sites[site.String()]
	d.heads.mu.Unlock()
	fresh := make(map[string]cachedHead, len(ents))
	out := make([]manifestHead, 0, len(ents))
	for _, e := range ents {
		path := filepath.Join(dir, e.Name(), "manifest.json")
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		id := identityOf(fi)
		c, ok := old[e.Name()]
		if !ok || c.id != id {
			man, err := readManifest(path)
			if err != nil {
				return nil, err
			}
			c = cachedHead{id: id, head: manifestHead{name: man.Name, guid: man.GUID, created: man.Created, seq: man.Seq, bytes: man.size()}}
		}
		fresh[e.Name()] = c
		out = append(out, c.head)
	}
	d.heads.mu.Lock()
	if d.heads.sites == nil || len(d.heads.sites) >= manifestHeadsSitesMax {
		d.heads.sites = map[string]map[string]cachedHead{}
	}
	d.heads.sites[site.String()] = fresh
	d.heads.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out, nil
}
