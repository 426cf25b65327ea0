package main

import (
	"fmt"
	"log/slog"
	"net"

	frontmysql "github.com/hybridcluster/hybridcluster/protocols/mysql"
	"github.com/hybridcluster/hybridcluster/runtime/host"
	"github.com/hybridcluster/hybridcluster/runtime/sites"
)

// startMySQL runs the MySQL front end on listen.mysql and registers its
// tunnel endpoint on the internal port. The returned func stops it.
func startMySQL(c *Config, h *host.Host, runner *sites.Supervisor, internal map[string]string, log *slog.Logger) (func(), error) {
	front, err := frontmysql.New(frontmysql.Config{Cluster: h, Token: c.nodeToken, Sites: runner, Admit: h.Admit,
		Admission: func(site string) frontmysql.Admission { return h.NewAdmission(site) },
		Logger:    log.With("component", "mysql"),
		Internal:  func(n string) (string, bool) { u, ok := internal[n]; return u, ok }})
	if err != nil {
		return nil, err
	}
	h.HandleInternal(frontmysql.TunnelPath, front.TunnelHandler())
	lis, err := net.Listen("tcp", c.Listen.MySQL)
	if err != nil {
		return nil, fmt.Errorf("listen mysql %s: %w", c.Listen.MySQL, err)
	}
	go func() {
		if err := front.Serve(lis); err != nil {
			log.Error("mysql listener failed", "err", err)
		}
	}()
	log.Info("mysql front end ready", "mysql", c.Listen.MySQL)
	return front.Close, nil
}
