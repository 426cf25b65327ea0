package localcluster

import (
	"context"
	"database/sql"
	"errors"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	driver "github.com/go-sql-driver/mysql"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// createMySQLSite creates a static site with one MySQL user through the
// real hcctl and waits until it is active with a replica.
func createMySQLSite(t *testing.T, ctx context.Context, c *Cluster, name, mysqlUser string) admin.Site {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.HCCtl(ctx, 0, "site", "create", name, "--domain", name+".example", "--mysql-user", mysqlUser)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hcctl site create: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	s, err := c.WaitSite(wctx, 0, name, func(s admin.Site) bool {
		if s.Master == "" || s.Phase != "active" {
			return false
		}
		for _, cp := range s.Copies {
			if cp.Role == "replica" && cp.Latest != nil {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mariadbCLI runs the real mariadb client against node i's MySQL port.
func mariadbCLI(ctx context.Context, c *Cluster, i int, user, password, db, sqlText string) (string, error) {
	h, port, _ := net.SplitHostPort(c.Nodes[i].MySQL)
	args := []string{"--no-defaults", "-h", h, "-P", port, "-u" + user, "-p" + password, "--batch", "--skip-column-names",
		"--connect-timeout=60", "-e", sqlText}
	if db != "" {
		args = append(args, db)
	}
	out, err := exec.CommandContext(ctx, "mariadb", args...).CombinedOutput()
	return string(out), err
}

func sqlDB(t *testing.T, c *Cluster, i int, user, password, db string) *sql.DB {
	t.Helper()
	d, err := sql.Open("mysql", user+":"+password+"@tcp("+c.Nodes[i].MySQL+")/"+db+"?timeout=60s")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// A site's database is reachable through every node's MySQL port: tables
// and rows made through n1 are read through n2 and n3 with the real
// mariadb client and database/sql; wrong passwords, unknown users and
// another site's database get the server's error codes.
func TestE2EMySQLThroughEveryNode(t *testing.T) {
	if _, err := exec.LookPath("mariadb"); err != nil {
		t.Fatal("the mariadb client is needed (scripts/test-deps.sh installs it)")
	}
	c := newCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	shop := createMySQLSite(t, ctx, c, "shop", "shop_user:shop-pw:shop_db")
	blog := createMySQLSite(t, ctx, c, "blog", "blog_user:blog-pw:blog_db")
	t.Logf("shop: master %s replicas %v; blog: master %s replicas %v", shop.Master, shop.Replicas, blog.Master, blog.Replicas)

	out, err := mariadbCLI(ctx, c, 0, "shop_user", "shop-pw", "shop_db",
		"CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(64)); INSERT INTO items VALUES (1,'apple'),(2,'pear'),(3,'plum');")
	if err != nil {
		t.Fatalf("create through n1: %v\n%s", err, out)
	}
	for i := 1; i < 3; i++ {
		out, err := mariadbCLI(ctx, c, i, "shop_user", "shop-pw", "shop_db", "SELECT id, name FROM items ORDER BY id")
		if err != nil || out != "1\tapple\n2\tpear\n3\tplum\n" {
			t.Fatalf("read through %s with mariadb: %v\n%q", c.Nodes[i].Name, err, out)
		}
		db := sqlDB(t, c, i, "shop_user", "shop-pw", "shop_db")
		var names []string
		rows, err := db.QueryContext(ctx, "SELECT name FROM items WHERE id >= ? ORDER BY id", 2)
		if err != nil {
			t.Fatalf("read through %s with database/sql: %v", c.Nodes[i].Name, err)
		}
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		rows.Close()
		if strings.Join(names, ",") != "pear,plum" {
			t.Fatalf("read through %s with database/sql: %v", c.Nodes[i].Name, names)
		}
	}

	for _, tc := range []struct {
		what           string
		user, pw, db   string
		code           uint16
		cliMustContain string
	}{
		{"wrong password", "shop_user", "wrong", "shop_db", 1045, "ERROR 1045"},
		{"unknown user", "nobody", "shop-pw", "", 1045, "ERROR 1045"},
		{"another site's database", "shop_user", "shop-pw", "blog_db", 1044, "ERROR 1044"},
		{"another site's database (blog)", "blog_user", "blog-pw", "shop_db", 1044, "ERROR 1044"},
	} {
		for i := range c.Nodes {
			err := sqlDB(t, c, i, tc.user, tc.pw, tc.db).PingContext(ctx)
			var me *driver.MySQLError
			if !errors.As(err, &me) || me.Number != tc.code {
				t.Fatalf("%s through %s: %v, want error %d", tc.what, c.Nodes[i].Name, err, tc.code)
			}
			out, _ := mariadbCLI(ctx, c, i, tc.user, tc.pw, tc.db, "SELECT 1")
			if !strings.Contains(out, tc.cliMustContain) || strings.Contains(out, "blog_db") && tc.db != "blog_db" {
				t.Fatalf("%s through %s with mariadb: %q", tc.what, c.Nodes[i].Name, out)
			}
		}
	}
}
