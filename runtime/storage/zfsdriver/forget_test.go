package zfsdriver

import "testing"

func TestForgetsLocations(t *testing.T) {
	d := &Driver{root: "tank/hc"}
	for _, c := range []struct {
		argv []string
		want bool
	}{
		{[]string{"zfs", "rename", "tank/hc/replicas/a", "tank/hc/sites/a"}, true},
		{[]string{"zfs", "create", "-o", "quota=1G", "tank/hc/sites/a"}, true},
		{[]string{"zfs", "receive", "-F", "tank/hc/replicas/a"}, true},
		{[]string{"zfs", "destroy", "-r", "-R", "tank/hc"}, true}, // a parent
		{[]string{"zfs", "clone", "tank/hc/sites/a@s1", "tank/hc/swap/a"}, false},
		{[]string{"zfs", "clone", "tank/hc/sites/a@s1", "tank/hc/sites/b"}, true},
		{[]string{"zfs", "promote", "tank/hc/sites/a"}, true},
		{[]string{"zfs", "destroy", "tank/hc/sites/a@s1"}, false}, // a snapshot
		{[]string{"zfs", "destroy", "tank/hc/views/a/s1"}, false},
		{[]string{"zfs", "snapshot", "tank/hc/sites/a@s2"}, false},
		{[]string{"zfs", "set", "readonly=off", "tank/hc/sites/a"}, false},
		{[]string{"zfs", "list", "-H", "-o", "name", "tank/hc/sites/a"}, false},
		{[]string{"zfs", "rename", "tank/hc/sites-old/a", "tank/hc/sitesx"}, false},
		{[]string{"zpool", "destroy", "-f", "tank"}, true},
		{[]string{"zpool", "list"}, false},
		{[]string{"zfs"}, false},
	} {
		if got := d.forgetsLocations(c.argv); got != c.want {
			t.Errorf("forgetsLocations(%q) = %v, want %v", c.argv, got, c.want)
		}
	}
}
