package admin_test

import (
	"strings"
	"testing"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// Names the site's own mariadbd uses are refused at create time (the
// server would refuse to start with them, and no user of the site could
// log in).
func TestCreateRefusesReservedMySQLNames(t *testing.T) {
	for _, u := range []admin.User{
		{Name: "root", Password: "x"},
		{Name: "mysql", Password: "x"},
		{Name: "bob", Password: "x", Databases: []string{"mysql"}},
		{Name: "bob", Password: "x", Databases: []string{"information_schema"}},
	} {
		_, err := admin.ValidateCreate(&admin.CreateSite{Name: "ok", Domains: []string{"ok.example"}, MySQLUsers: []admin.User{u}})
		if err == nil || !strings.Contains(err.Error(), "reserved") {
			t.Errorf("user %+v: %v, want a reserved-name error", u, err)
		}
	}
	if _, err := admin.ValidateCreate(&admin.CreateSite{Name: "ok", Domains: []string{"ok.example"},
		MySQLUsers: []admin.User{{Name: "rooter", Password: "x", Databases: []string{"mysql_app"}}}}); err != nil {
		t.Errorf("ordinary names refused: %v", err)
	}
}
