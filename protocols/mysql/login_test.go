package mysql

import (
	"context"
	"crypto/sha1"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	gm "github.com/go-mysql-org/go-mysql/mysql"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// dyingSites is the node's site processes with a server that dies under
// the first logins: the first dying dials get a connection that the server
// closes before its greeting (a connection in a killed server's backlog),
// which reports the server's exit as exited says. liveExited: the
// connections to the live server claim its exit too.
type dyingSites struct {
	Sites
	dying      int
	exited     bool
	liveExited bool

	mu    sync.Mutex
	dials int
}

func (s *dyingSites) DialMySQL(ctx context.Context, site string) (net.Conn, error) {
	s.mu.Lock()
	s.dials++
	dead := s.dials <= s.dying
	s.mu.Unlock()
	if !dead {
		c, err := s.Sites.DialMySQL(ctx, site)
		if err == nil && s.liveExited {
			c = exitConn{c, true}
		}
		return c, err
	}
	client, server := net.Pipe()
	server.Close()
	return exitConn{client, s.exited}, nil
}

func (s *dyingSites) dialed() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.dials
}

type exitConn struct {
	net.Conn
	exited bool
}

func (c exitConn) ServerExited(context.Context) bool { return c.exited }

// TestLoginRetriesWhenTheServerDied: a login that fails on a connection
// the site's server dropped as it died is tried again on a new dial (which
// starts the server again), at most loginRetriesMax times; a drop without
// the server's exit, or the server's own refusal, stands.
func TestLoginRetriesWhenTheServerDied(t *testing.T) {
	n := startNodes(t)
	salt := []byte("0123456789abcdefghij")
	tl := func(pw string) tunnelLogin {
		s1 := sha1.Sum([]byte(pw))
		return tunnelLogin{login: login{User: "shop", Salt: salt, Answer: nativeAnswer(s1[:], salt), DB: "shop_db",
			Caps: serverCaps, Charset: collationUTF8MB4}, ClientHost: "127.0.0.1"}
	}
	for _, tc := range []struct {
		name      string
		dying     int
		exited    bool
		wantOK    bool
		wantDials int
	}{
		{"died once", 1, true, true, 2},
		{"died at every retry", loginRetriesMax, true, true, loginRetriesMax + 1},
		{"died past the bound", loginRetriesMax + 1, true, false, loginRetriesMax + 1},
		{"dropped, server alive", 1, false, false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			s := &dyingSites{Sites: n.sup, dying: tc.dying, exited: tc.exited}
			be, _, err := masterLogin(ctx, s, "shop", tl("shop-pw"))
			if (err == nil) != tc.wantOK {
				t.Fatalf("login: %v, want ok %v", err, tc.wantOK)
			}
			if be != nil {
				be.conn.Close()
			}
			if got := s.dialed(); got != tc.wantDials {
				t.Fatalf("%d dials, want %d", got, tc.wantDials)
			}
		})
	}
	// The server's own answer is not a death, even with an exit noticed: a
	// wrong password for the server (the spec says otherwise) is not tried
	// again.
	t.Run("refused by the server", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		spec := n.sup.SiteSpec("shop")
		wrong := &fixedSpec{Sites: n.sup, spec: &m.SiteSpec{Name: "shop", MysqlUsers: []*m.MysqlUser{
			{Name: "shop", PasswordHash: nativeHash("other-pw"), Databases: spec.GetMysqlUsers()[0].GetDatabases()}}}}
		s := &dyingSites{Sites: wrong, liveExited: true}
		_, _, err := masterLogin(ctx, s, "shop", tl("other-pw"))
		var me *gm.MyError
		if !errors.As(err, &me) || me.Code != gm.ER_ACCESS_DENIED_ERROR {
			t.Fatalf("login: %v, want the server's 1045", err)
		}
		if got := s.dialed(); got != 1 {
			t.Fatalf("%d dials, want 1", got)
		}
	})
}

// fixedSpec answers spec for the site instead of the started one.
type fixedSpec struct {
	Sites
	spec *m.SiteSpec
}

func (s *fixedSpec) SiteSpec(string) *m.SiteSpec { return s.spec }
