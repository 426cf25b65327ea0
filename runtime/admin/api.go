// Package admin is the admin endpoint every node serves (JSON over HTTP,
// bearer-token auth) and its client. Every handler is a message to an
// actor: reads are AdminQuery answers (the balancer's cluster view, a
// dataset actor's snapshots), writes are the actors' own admin messages.
//
// The API (all bodies JSON; errors are {"error":{"code":..,"message":..}}):
//
//	GET    /v1/sites                              {"sites":[Site]}
//	POST   /v1/sites            CreateSite        202 {"site":Site}
//	GET    /v1/sites/{site}                       Site
//	DELETE /v1/sites/{site}                       202 {"site":Site} (stops it everywhere, stashes every copy whole)
//	POST   /v1/sites/{site}/migrate   {"to":node} 202 {"site":Site}
//	GET    /v1/sites/{site}/snapshots             {"snapshots":[Snapshot],"node":n}
//	POST   /v1/sites/{site}/snapshots             202 {}
//	POST   /v1/sites/{site}/snapshots/{snap}/mount Mount (read-only view, path on the master)
//	DELETE /v1/sites/{site}/snapshots/{snap}/mount Mount (without path)
//	POST   /v1/sites/{site}/rollback {"snapshot":s} 202 {}
//	GET    /v1/sites/{site}/stash                 {"stashes":[string],"node":n}
//	POST   /v1/sites/{site}/stash/{stash}/restore 202 {}
//	GET    /v1/nodes                              {"nodes":[Node]}
//	POST   /v1/nodes/{node}/drain                 202 {}
//	GET    /v1/events                             text/event-stream of Event
//	GET    /v1/health                             {"node":n,"ok":true} (no auth)
//	GET    /v1/stats                              Stats (goroutines, memory)
package admin

import "time"

// Error codes of the JSON errors.
const (
	CodeUnauthorized = "unauthorized" // 401: missing or wrong bearer token
	CodeBadRequest   = "bad_request"  // 400: malformed body or invalid name
	CodeNotFound     = "not_found"    // 404: no such site, node or route
	CodeConflict     = "conflict"     // 409: e.g. the site exists already
	CodeUnavailable  = "unavailable"  // 503: no balancer or master answered in time
	CodeInternal     = "internal"     // 500
	CodeNotAllowed   = "not_allowed"  // 405
	CodeTooLarge     = "too_large"    // 413: request body over MaxBodyBytes
	// CodeNotImplemented (501): a route the endpoint knows but the cluster
	// does not carry out (none at present).
	CodeNotImplemented = "not_implemented"
)

// ErrorBody is the JSON of every error answer.
type ErrorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// User is an FTP or MySQL account of a site.
type User struct {
	Name      string   `json:"name"`
	Password  string   `json:"password,omitempty"`  // accepted on create, never returned
	Databases []string `json:"databases,omitempty"` // MySQL only
}

// CreateSite is the body of POST /v1/sites.
type CreateSite struct {
	Name       string   `json:"name"`
	Domains    []string `json:"domains"`
	AppCommand string   `json:"app_command,omitempty"` // empty: static files from web/
	QuotaBytes uint64   `json:"quota_bytes,omitempty"`
	Redundancy uint32   `json:"redundancy,omitempty"` // copies including the master; 0: cluster default
	FTPUsers   []User   `json:"ftp_users,omitempty"`
	MySQLUsers []User   `json:"mysql_users,omitempty"`
	// TLSCert and TLSKey are the site's certificate chain and private key
	// (PEM) for HTTPS at the front ends (chosen by SNI); both or neither.
	// The key is never returned.
	TLSCert string `json:"tls_cert,omitempty"`
	TLSKey  string `json:"tls_key,omitempty"`
}

// Snapshot is one snapshot of a site's dataset.
type Snapshot struct {
	Name    string    `json:"name"`
	Epoch   string    `json:"epoch"`
	Seq     uint64    `json:"seq"`
	TakenAt time.Time `json:"taken_at"`
	// MountPath is set in a snapshot list while the snapshot is mounted
	// read-only there (on the list's node).
	MountPath string `json:"mount_path,omitempty"`
}

// Copy is one node's copy of a site.
type Copy struct {
	Node      string    `json:"node"`
	Role      string    `json:"role"`  // master, replica
	Phase     string    `json:"phase"` // active, paused, ... (master)
	Epoch     string    `json:"epoch"`
	Latest    *Snapshot `json:"latest,omitempty"`
	LagS      float64   `json:"lag_s"` // replica: master's newest snapshot time minus this copy's
	Bytes     uint64    `json:"bytes"`
	Stashes   uint32    `json:"stashes"`
	Snapshots uint32    `json:"snapshots"`
	// ActivationError is why this copy's last try to take over as master
	// failed in storage (a mount that failed, say), while the site has no
	// master: what keeps a failover from ending.
	ActivationError string `json:"activation_error,omitempty"`
	// ReplicationError (a replica) is why the master's last stream to
	// this copy failed (the receiver's error, e.g. out of space); "" once
	// one gets through.
	ReplicationError string `json:"replication_error,omitempty"`
}

// Site is a site as the balancer's latest reports show it.
type Site struct {
	Name         string    `json:"name"`
	Domains      []string  `json:"domains"`
	AppCommand   string    `json:"app_command,omitempty"`
	QuotaBytes   uint64    `json:"quota_bytes,omitempty"`
	FTPUsers     []string  `json:"ftp_users,omitempty"`
	MySQLUsers   []string  `json:"mysql_users,omitempty"`
	Master       string    `json:"master"` // "" while placing or failing over
	Phase        string    `json:"phase"`
	Epoch        string    `json:"epoch"`
	Replicas     []string  `json:"replicas"`
	LastSnapshot *Snapshot `json:"last_snapshot,omitempty"`
	LagS         float64   `json:"replication_lag_s"` // the largest lag of any replica
	Copies       []Copy    `json:"copies"`
	FTPLeases    uint32    `json:"ftp_leases"`
	TLS          bool      `json:"tls,omitempty"` // a certificate is stored for HTTPS
	// ProcessError is why the site's processes (app, mariadbd) are not up
	// on its master, as the master's host last reported it; "" when they
	// are, or none has been asked for.
	ProcessError string    `json:"process_error,omitempty"`
	ReportedAt   time.Time `json:"reported_at"`
}

// Node is one member of the cluster.
type Node struct {
	Name       string    `json:"name"`
	Live       bool      `json:"live"`
	Draining   bool      `json:"draining"`
	Load       uint64    `json:"load"` // requests served in the last report interval
	FreeBytes  uint64    `json:"free_bytes"`
	SizeBytes  uint64    `json:"size_bytes"` // the pool's size as the node's datasets see it; 0: not known
	Masters    int       `json:"masters"`
	Replicas   int       `json:"replicas"`
	Balancer   bool      `json:"balancer"`
	ReportedAt time.Time `json:"reported_at"`
	// ClusterMember is the node's member id in the protoactor cluster
	// provider's topology as the answering node sees it ("" when absent or
	// when no provider runs).
	ClusterMember string `json:"cluster_member,omitempty"`
}

// Event is one server-sent event of GET /v1/events (the SSE "event" field
// is Type; "data" is this JSON).
type Event struct {
	Type   string    `json:"type"` // route, member, log
	At     time.Time `json:"at"`
	Site   string    `json:"site,omitempty"`
	Node   string    `json:"node,omitempty"`
	Master string    `json:"master,omitempty"`
	Epoch  string    `json:"epoch,omitempty"`
	Phase  string    `json:"phase,omitempty"`
	Up     *bool     `json:"up,omitempty"`
	Msg    string    `json:"msg,omitempty"`
}

// The bodies of requests and answers that wrap the types above.
type (
	// SiteList is the answer of GET /v1/sites.
	SiteList struct {
		Sites []Site `json:"sites"`
	}
	// SiteBody is the answer of POST /v1/sites, of a migrate and of a
	// delete (the site as it was when asked).
	SiteBody struct {
		Site Site `json:"site"`
	}
	// MigrateRequest is the body of POST /v1/sites/{site}/migrate.
	MigrateRequest struct {
		To string `json:"to"`
	}
	// RollbackRequest is the body of POST /v1/sites/{site}/rollback.
	RollbackRequest struct {
		Snapshot string `json:"snapshot"`
	}
	// SnapshotList is the answer of GET /v1/sites/{site}/snapshots: the
	// snapshots of the copy on Node (the master), oldest first.
	SnapshotList struct {
		Snapshots []Snapshot `json:"snapshots"`
		Node      string     `json:"node"`
	}
	// Mount is the answer of POST and DELETE
	// /v1/sites/{site}/snapshots/{snap}/mount: the snapshot's files are
	// readable (read-only) in directory Path on node Node (the master),
	// until unmounted.
	Mount struct {
		Site     string `json:"site"`
		Snapshot string `json:"snapshot"`
		Node     string `json:"node"`
		Path     string `json:"path,omitempty"`
	}
	// StashList is the answer of GET /v1/sites/{site}/stash: the stashes of
	// the copy on Node (the master).
	StashList struct {
		Stashes []string `json:"stashes"`
		Node    string   `json:"node"`
	}
	// NodeList is the answer of GET /v1/nodes.
	NodeList struct {
		Nodes []Node `json:"nodes"`
		// ClusterProvider is the membership provider the answering node
		// runs (automanaged, etcd, consul; "" for none).
		ClusterProvider string `json:"cluster_provider,omitempty"`
	}
	// Health is the answer of GET /v1/health.
	Health struct {
		Node string `json:"node"`
		OK   bool   `json:"ok"`
	}
	// Stats is the answer of GET /v1/stats: the node process's own
	// figures, for soak tests (goroutines and memory over failovers).
	Stats struct {
		Node       string `json:"node"`
		Goroutines int    `json:"goroutines"`
		HeapBytes  uint64 `json:"heap_bytes"` // live heap (HeapAlloc)
		SysBytes   uint64 `json:"sys_bytes"`  // obtained from the OS
	}
)
