package admin

import (
	"crypto/tls"
	"fmt"
	"slices"
	"strings"

	m "github.com/hybridcluster/hybridcluster/messages"
)

// Bounds of a CreateSite body. A site's name becomes a dataset and directory
// name on every node, and its users become FTP and MySQL accounts, so names
// are checked strictly here, before any actor sees them.
const (
	MaxSiteName      = 63
	MaxDomains       = 64
	MaxDomainLen     = 253
	MaxUserName      = 32
	MaxPasswordBytes = 128
	MaxUsers         = 32 // per kind (FTP, MySQL)
	MaxDatabases     = 32 // per MySQL user
	MaxDatabaseName  = 64
	MaxAppCommand    = 4096
	MaxRedundancy    = 16 // as core.Config's redundancy bound
	// MaxTLSPEMBytes bounds a site's certificate chain and its key (each):
	// they travel in every copy of the site's spec.
	MaxTLSPEMBytes = 64 << 10
)

// The site's mariadbd uses these names itself (runtime/sites refuses a
// spec that has them).
var (
	reservedMySQLUsers = []string{"root", "mysql", "public", "mariadb"}
	reservedDatabases  = []string{"mysql", "information_schema", "performance_schema", "sys"}
)

// quote is a user-supplied value for an error message: quoted and cut short.
func quote(s string) string {
	const max = 80
	if len(s) > max {
		s = s[:max] + "..."
	}
	return fmt.Sprintf("%q", s)
}

func isLowerDigit(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// ValidSiteName reports whether name is a site name: 1..63 lower-case
// letters, digits and inner '-'.
func ValidSiteName(name string) bool {
	if len(name) == 0 || len(name) > MaxSiteName || name[0] == '-' || name[len(name)-1] == '-' {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; !isLowerDigit(c) && c != '-' {
			return false
		}
	}
	return true
}

// normalDomain returns d lower-cased (ASCII only) without a trailing dot if
// it is a DNS name: labels of 1..63 letters, digits and inner '-', 253 bytes
// at most, a last label that is not all digits (not an IP address).
func normalDomain(d string) (string, bool) {
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			return "", false
		}
	}
	d = strings.ToLower(strings.TrimSuffix(d, "."))
	if len(d) == 0 || len(d) > MaxDomainLen {
		return "", false
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isLowerDigit(c) && c != '-' {
				return "", false
			}
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return "", false
	}
	return d, true
}

// validIdent reports whether s is 1..n of [a-z0-9_] (user and database names).
func validIdent(s string, n int) bool {
	if len(s) == 0 || len(s) > n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isLowerDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

func checkUser(kind string, u User, seen map[string]bool) error {
	if !validIdent(u.Name, MaxUserName) {
		return fmt.Errorf("%s user %s: want 1..%d of a-z, 0-9, _", kind, quote(u.Name), MaxUserName)
	}
	if seen[u.Name] {
		return fmt.Errorf("%s user %q given twice", kind, u.Name)
	}
	seen[u.Name] = true
	if len(u.Password) == 0 || len(u.Password) > MaxPasswordBytes {
		return fmt.Errorf("%s user %q: password must be 1..%d bytes", kind, u.Name, MaxPasswordBytes)
	}
	return nil
}

// ValidateCreate checks a CreateSite body and returns the spec to send, with
// domains normalised and passwords replaced by their hashes.
func ValidateCreate(c *CreateSite) (*m.SiteSpec, error) {
	if !ValidSiteName(c.Name) {
		return nil, fmt.Errorf("site name %s: want 1..%d of a-z, 0-9 and inner '-'", quote(c.Name), MaxSiteName)
	}
	if len(c.Domains) == 0 || len(c.Domains) > MaxDomains {
		return nil, fmt.Errorf("want 1..%d domains, got %d", MaxDomains, len(c.Domains))
	}
	spec := &m.SiteSpec{Name: c.Name, AppCommand: c.AppCommand, QuotaBytes: c.QuotaBytes, Redundancy: c.Redundancy}
	seen := map[string]bool{}
	for _, d := range c.Domains {
		n, ok := normalDomain(d)
		if !ok {
			return nil, fmt.Errorf("domain %s is not a DNS name", quote(d))
		}
		if seen[n] {
			return nil, fmt.Errorf("domain %q given twice", n)
		}
		seen[n] = true
		spec.Domains = append(spec.Domains, n)
	}
	if len(c.AppCommand) > MaxAppCommand {
		return nil, fmt.Errorf("app command is %d bytes, at most %d", len(c.AppCommand), MaxAppCommand)
	}
	if strings.IndexByte(c.AppCommand, 0) >= 0 {
		return nil, fmt.Errorf("app command contains a NUL byte")
	}
	if c.TLSCert != "" || c.TLSKey != "" {
		if c.TLSCert == "" || c.TLSKey == "" {
			return nil, fmt.Errorf("TLS needs both a certificate and its key")
		}
		if len(c.TLSCert) > MaxTLSPEMBytes || len(c.TLSKey) > MaxTLSPEMBytes {
			return nil, fmt.Errorf("TLS certificate or key longer than %d bytes", MaxTLSPEMBytes)
		}
		pair, err := tls.X509KeyPair([]byte(c.TLSCert), []byte(c.TLSKey))
		if err != nil {
			return nil, fmt.Errorf("TLS certificate and key: %v", err)
		}
		if leaf := pair.Leaf; leaf != nil {
			for _, d := range spec.Domains {
				if leaf.VerifyHostname(d) != nil {
					return nil, fmt.Errorf("the TLS certificate does not cover domain %s", d)
				}
			}
		}
		spec.TlsCertPem, spec.TlsKeyPem = []byte(c.TLSCert), []byte(c.TLSKey)
	}
	if c.Redundancy > MaxRedundancy {
		return nil, fmt.Errorf("redundancy %d: want 0 (cluster default) or 1..%d", c.Redundancy, MaxRedundancy)
	}
	if len(c.FTPUsers) > MaxUsers || len(c.MySQLUsers) > MaxUsers {
		return nil, fmt.Errorf("at most %d FTP and %d MySQL users", MaxUsers, MaxUsers)
	}
	// Check everything before hashing anything (hashing is deliberately slow).
	seenFTP := map[string]bool{}
	for _, u := range c.FTPUsers {
		if err := checkUser("ftp", u, seenFTP); err != nil {
			return nil, err
		}
		if len(u.Databases) > 0 {
			return nil, fmt.Errorf("ftp user %q: databases are for MySQL users", u.Name)
		}
	}
	seenSQL := map[string]bool{}
	for _, u := range c.MySQLUsers {
		if err := checkUser("mysql", u, seenSQL); err != nil {
			return nil, err
		}
		if slices.Contains(reservedMySQLUsers, u.Name) {
			return nil, fmt.Errorf("mysql user %q: the name is reserved by the database server", u.Name)
		}
		if len(u.Databases) > MaxDatabases {
			return nil, fmt.Errorf("mysql user %q: at most %d databases", u.Name, MaxDatabases)
		}
		dbs := map[string]bool{}
		for _, db := range u.Databases {
			if !validIdent(db, MaxDatabaseName) {
				return nil, fmt.Errorf("mysql user %q: database %s: want 1..%d of a-z, 0-9, _", u.Name, quote(db), MaxDatabaseName)
			}
			if slices.Contains(reservedDatabases, db) {
				return nil, fmt.Errorf("mysql user %q: database %q is reserved by the database server", u.Name, db)
			}
			if dbs[db] {
				return nil, fmt.Errorf("mysql user %q: database %q given twice", u.Name, db)
			}
			dbs[db] = true
		}
	}
	for _, u := range c.FTPUsers {
		h, err := HashFTPPassword(u.Password)
		if err != nil {
			return nil, err
		}
		spec.FtpUsers = append(spec.FtpUsers, &m.FtpUser{Name: u.Name, PasswordHash: h})
	}
	for _, u := range c.MySQLUsers {
		spec.MysqlUsers = append(spec.MysqlUsers, &m.MysqlUser{
			Name: u.Name, PasswordHash: HashMySQLPassword(u.Password), Databases: append([]string(nil), u.Databases...)})
	}
	return spec, nil
}
