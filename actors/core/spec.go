package core

import "github.com/hybridcluster/hybridcluster/messages"

// MysqlUserNames lists the names of a spec's MySQL users (what a route
// carries so that every node's MySQL front end can route by user name),
// nil for none.
func MysqlUserNames(spec *messages.SiteSpec) []string {
	var names []string
	for _, u := range spec.GetMysqlUsers() {
		names = append(names, u.GetName())
	}
	return names
}
