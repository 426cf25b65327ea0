package zfsdriver

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Where a site's dataset lives (sites/ or replicas/, or neither) is asked
// by almost every operation: a stream's two ends locate the site five to
// eight times between them. Each answer is one or two `zfs list` probes,
// 10-30 ms each on zfs-fuse, and a planned move waits for the final
// stream's. So the answers are kept, and forgotten:
//
//   - whenever a command that can create, remove or rename a dataset under
//     sites/ or replicas/ runs through the choke point (create, destroy,
//     rename, receive, clone, promote), before and after it;
//   - whenever a command reports that a dataset does not exist (the disk
//     changed behind the driver's back, e.g. an operator's zfs rename);
//   - after locationTTL, so that such a change is noticed even without a
//     failing command.
//
// A probe that ran while one of those commands did is not kept (the
// generation changed under it).
const (
	// locationTTL bounds how long a kept answer is trusted.
	locationTTL = 10 * time.Second
	// locationsMax bounds the answers kept; at the bound the cache starts
	// again (a node has far fewer sites).
	locationsMax = 10_000
)

type location struct {
	ds     string // "" when the site has no dataset here
	ro     bool
	probed time.Time
	// mount is ds's mountpoint once asked ("" until then): it changes only
	// with the dataset's name (a promotion or demotion renames it, which
	// forgets the answer) or by an operator's hand (kept locationTTL from
	// mountAsked).
	mount      string
	mountAsked time.Time
}

// mutatingVerbs are the zfs subcommands that create, remove or rename
// datasets.
var mutatingVerbs = map[string]bool{"create": true, "destroy": true, "rename": true, "receive": true, "recv": true, "clone": true, "promote": true}

// forgetsLocations reports whether a command may change where a site's
// dataset is: a mutating zfs verb naming a dataset under (or above) the
// sites/ or replicas/ parents, or any zpool create or destroy.
func (d *Driver) forgetsLocations(argv []string) bool {
	if len(argv) < 2 {
		return false
	}
	if argv[0] == "zpool" {
		return argv[1] == "create" || argv[1] == "destroy"
	}
	if !mutatingVerbs[argv[1]] {
		return false
	}
	for _, a := range argv[2:] {
		if strings.HasPrefix(a, "-") || strings.Contains(a, "@") {
			continue // an option or a snapshot, not a dataset that moves
		}
		for _, parent := range []string{d.root + "/sites/", d.root + "/replicas/"} {
			if strings.HasPrefix(a, parent) || strings.HasPrefix(parent, a+"/") {
				return true
			}
		}
	}
	return false
}

// forgetLocations drops every kept answer and starts a new generation.
func (d *Driver) forgetLocations() {
	d.mu.Lock()
	d.locGen++
	clear(d.locations)
	d.mu.Unlock()
}

// knowLocation records where the site's dataset is now, after the driver
// itself put it there (the caller holds the site's lock, and the command
// that moved it has forgotten the older answers).
func (d *Driver) knowLocation(site storage.Site, ds string, ro bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.locations) >= locationsMax {
		clear(d.locations)
	}
	d.locations[site.String()] = location{ds: ds, ro: ro, probed: time.Now()}
}

// confirmLocation renews the kept answer for site after a command on ds
// succeeded under the site's lock (the dataset is where the answer says),
// so that a site in steady use is not probed again every locationTTL.
func (d *Driver) confirmLocation(site storage.Site, ds string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.locations[site.String()]; ok && l.ds == ds {
		l.probed = time.Now()
		d.locations[site.String()] = l
	}
}

// keptMount is ds's mountpoint as kept with the site's location ("" when
// not kept, or kept for another dataset).
func (d *Driver) keptMount(site storage.Site, ds string) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.locations[site.String()]; ok && l.ds == ds && time.Since(l.probed) < locationTTL && time.Since(l.mountAsked) < locationTTL {
		return l.mount
	}
	return ""
}

// keepMount keeps ds's mountpoint, asked at asked, with the site's
// location, unless the location changed (or was forgotten) since gen.
func (d *Driver) keepMount(site storage.Site, ds, mount string, asked time.Time, gen uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if l, ok := d.locations[site.String()]; ok && l.ds == ds && d.locGen == gen {
		l.mount, l.mountAsked = mount, asked
		d.locations[site.String()] = l
	}
}

// locate finds the site's dataset and whether it is a read-only replica.
func (d *Driver) locate(ctx context.Context, site storage.Site) (string, bool, error) {
	if err := checkSite(site); err != nil {
		return "", false, err
	}
	key := site.String()
	d.mu.Lock()
	l, ok := d.locations[key]
	gen := d.locGen
	d.mu.Unlock()
	if ok && time.Since(l.probed) < locationTTL {
		if l.ds == "" {
			return "", false, fmt.Errorf("%w: site %s", storage.ErrNoDataset, site)
		}
		return l.ds, l.ro, nil
	}
	l, err := d.probeLocation(ctx, site)
	if err != nil {
		return "", false, err
	}
	d.mu.Lock()
	if d.locGen == gen {
		if len(d.locations) >= locationsMax {
			clear(d.locations)
		}
		d.locations[key] = l
	}
	d.mu.Unlock()
	if l.ds == "" {
		return "", false, fmt.Errorf("%w: site %s", storage.ErrNoDataset, site)
	}
	return l.ds, l.ro, nil
}

// probeLocation asks zfs where the site's dataset is.
func (d *Driver) probeLocation(ctx context.Context, site storage.Site) (location, error) {
	started := time.Now()
	for _, c := range []struct {
		ds string
		ro bool
	}{{d.writableDS(site), false}, {d.replicaDS(site), true}} {
		ok, err := d.datasetExists(ctx, c.ds)
		if err != nil {
			return location{}, err
		}
		if ok {
			return location{ds: c.ds, ro: c.ro, probed: started}, nil
		}
	}
	return location{probed: started}, nil
}
