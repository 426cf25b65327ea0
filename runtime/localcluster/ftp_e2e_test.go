package localcluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/admin"
)

// lftpWaitMax bounds one lftp or curl run of the FTP tests.
const lftpWaitMax = 2 * time.Minute

// createFTPSite creates a static site with one FTP user through hcctl and
// waits until it is active with a replica.
func createFTPSite(t *testing.T, ctx context.Context, c *Cluster, name, domain, ftpUser string) admin.Site {
	t.Helper()
	return createSiteWith(t, ctx, c, name, "--domain", domain, "--ftp-user", ftpUser)
}

// lftp runs the real lftp client against node i's FTP port as login,
// plain FTP, passive mode, and returns its output and error.
func lftp(c *Cluster, i int, login, commands string) (string, error) {
	return lftpWith(c, i, login, "set ftp:ssl-allow no; ", commands)
}

// lftpWith is lftp with settings of the caller's (TLS ones).
func lftpWith(c *Cluster, i int, login, settings, commands string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), lftpWaitMax)
	defer cancel()
	host, port, _ := strings.Cut(c.Nodes[i].FTP, ":")
	// Commands are chained with && so that the first failure ends the run
	// with a non-zero status (cmd:fail-exit makes lftp hang on exit).
	script := "set net:max-retries 1; set net:timeout 20; set net:reconnect-interval-base 1; " + settings +
		"set ftp:passive-mode on; set xfer:clobber on; " +
		fmt.Sprintf("open -u %s -p %s %s; ", login, port, host) + strings.ReplaceAll(commands, "; ", " && ")
	out, err := exec.CommandContext(ctx, "lftp", "-c", script).CombinedOutput()
	return string(out), err
}

func mustLftp(t *testing.T, c *Cluster, i int, login, commands string) string {
	t.Helper()
	out, err := lftp(c, i, login, commands)
	if err != nil {
		t.Fatalf("lftp via %s: %s: %v\n%s", c.Nodes[i].Name, commands, err, out)
	}
	return out
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func randomFile(t *testing.T, path string, size int64) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return fileSum(t, path)
}

// webDirOf is the directory of site's web root on node i (portable driver).
func webDirOf(c *Cluster, i int, site string) string {
	return filepath.Join(c.Nodes[i].DataDir, "datasets", "sites", site, "live", "web")
}

// FTP through every node, with real lftp and curl: an upload through a
// node that is not the master, served over HTTP through the third node and
// downloaded back intact through the master; resume, rename, delete,
// mkdir/rmdir, size and modification time; a mirror of a tree up and back;
// and escapes (.., a symlink to /etc, to another site, to a directory
// outside for writing) refused, logged, and without host paths in replies.
func TestE2EFTP(t *testing.T) {
	for _, tool := range []string{"lftp", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is needed (make deps installs it)", tool)
		}
	}
	c := newCluster(t, 3)
	ctx := context.Background()
	s := createFTPSite(t, ctx, c, "web", "web.example", "alice:pw-alice")
	createFTPSite(t, ctx, c, "other", "other.example", "bob:pw-bob")
	master := c.NodeIndex(s.Master)
	via, httpNode := (master+1)%3, (master+2)%3
	t.Logf("web: master %s; upload via %s, HTTP via %s", s.Master, c.Nodes[via].Name, c.Nodes[httpNode].Name)
	const login = "alice@web,pw-alice"
	local := t.TempDir()

	// Wrong logins are refused, on a non-master node too.
	for _, bad := range []string{"alice@web,wrong", "bob@web,pw-bob", "alice,pw-alice", "alice@nosuch,pw-alice"} {
		if out, err := lftp(c, via, bad, "ls"); err == nil || !strings.Contains(out, "530") {
			t.Fatalf("login %q was not refused: %v\n%s", bad, err, out)
		}
	}

	// Upload through a non-master node, HTTP through the third, download
	// back through the master.
	big := filepath.Join(local, "big.bin")
	sum := randomFile(t, big, 8<<20+12345)
	mustLftp(t, c, via, login, "put "+big+" -o /big.bin")
	got := filepath.Join(local, "http.bin")
	curl(t, "-o", got, "-H", "Host: web.example", c.URL(httpNode)+"/big.bin")
	if fileSum(t, got) != sum {
		t.Fatal("the file served over HTTP differs from the one uploaded")
	}
	back := filepath.Join(local, "back.bin")
	mustLftp(t, c, master, login, "get /big.bin -o "+back)
	if fileSum(t, back) != sum {
		t.Fatal("the file downloaded through the master differs from the one uploaded")
	}

	// Resume: a download from an offset (REST) with curl through a
	// non-master node, and an upload resumed with lftp (REST + STOR).
	part := filepath.Join(local, "part.bin")
	host, port, _ := strings.Cut(c.Nodes[via].FTP, ":")
	ftpURL := fmt.Sprintf("ftp://%s:%s/big.bin", host, port)
	if out, err := exec.Command("curl", "-sS", "--max-time", "60", "-u", "alice@web:pw-alice", "-C", "1000000", "-o", part, ftpURL).CombinedOutput(); err != nil {
		t.Fatalf("curl resumed download: %v\n%s", err, out)
	}
	whole, _ := os.ReadFile(big)
	tail, _ := os.ReadFile(part)
	if !bytes.Equal(tail, whole[1000000:]) {
		t.Fatalf("resumed download: %d bytes, want the %d after offset 1000000", len(tail), len(whole)-1000000)
	}
	half := filepath.Join(local, "half.bin")
	if err := os.WriteFile(half, whole[:3<<20], 0o644); err != nil {
		t.Fatal(err)
	}
	mustLftp(t, c, via, login, "put "+half+" -o /resumed.bin")
	mustLftp(t, c, via, login, "put -c "+big+" -o /resumed.bin")
	mustLftp(t, c, master, login, "get /resumed.bin -o "+back)
	if fileSum(t, back) != sum {
		t.Fatal("the upload resumed through a non-master node differs from the file")
	}

	// Size, modification time, rename, delete, mkdir, rmdir.
	out := mustLftp(t, c, via, login, "quote SIZE /big.bin; quote MDTM /big.bin; mkdir /d1; mv /resumed.bin /d1/r.bin; cls -l /d1; rm /d1/r.bin; rmdir /d1")
	for _, want := range []string{fmt.Sprintf("213 %d", 8<<20+12345), "213 20", "r.bin"} {
		if !strings.Contains(out, want) {
			t.Fatalf("lftp output lacks %q:\n%s", want, out)
		}
	}
	if out := mustLftp(t, c, master, login, "cls -1 /"); strings.Contains(out, "d1") || !strings.Contains(out, "big.bin") {
		t.Fatalf("listing after rmdir:\n%s", out)
	}

	// A tree mirrored up through a non-master node and back through the
	// third node.
	tree := filepath.Join(local, "tree")
	for i, p := range []string{"a/one.txt", "a/b/two.txt", "a/b/c/three.bin", "top.txt", "e/empty/.keep"} {
		full := filepath.Join(tree, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		data := bytes.Repeat([]byte(fmt.Sprintf("file %d %s\n", i, p)), 1000*(i+1))
		if err := os.WriteFile(full, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustLftp(t, c, via, login, "mirror -R "+tree+" /tree")
	mirrored := filepath.Join(local, "mirrored")
	mustLftp(t, c, httpNode, login, "mirror /tree "+mirrored)
	if diff, err := exec.Command("diff", "-r", tree, mirrored).CombinedOutput(); err != nil {
		t.Fatalf("the tree mirrored back differs: %v\n%s", err, diff)
	}

	// Escapes. The site's own files (as an app could write them) hold
	// symlinks to /etc, to the other site's files, and to a writable
	// directory outside every dataset.
	outside := t.TempDir()
	web := webDirOf(c, master, "web")
	otherWeb := webDirOf(c, master, "other") // on this node as master or replica
	for name, target := range map[string]string{"etc": "/etc", "passwd": "/etc/passwd", "othersite": otherWeb, "outside": outside} {
		if err := os.Symlink(target, filepath.Join(web, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(outside, "secret.txt"), []byte("outside secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	upload := filepath.Join(local, "evil.txt")
	if err := os.WriteFile(upload, []byte("evil\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, node := range []int{via, master} {
		for _, cmd := range []string{
			"cat /etc/passwd", "cat etc/passwd", "cat passwd", "cls etc/", "cat ../../../../etc/passwd",
			"cd ../../..; cat etc/passwd", "cat othersite/index.html", "cls othersite/", "cat outside/secret.txt",
			"put " + upload + " -o outside/evil.txt", "put " + upload + " -o /outside/new/evil.txt",
			"mkdir outside/newdir", "mv big.bin outside/moved.bin", "rm outside/secret.txt",
		} {
			out, err := lftp(c, node, login, cmd)
			if err == nil {
				t.Fatalf("escape %q via %s succeeded:\n%s", cmd, c.Nodes[node].Name, out)
			}
			for _, leak := range []string{"root:x:0", "outside secret", c.Nodes[master].DataDir, outside} {
				if strings.Contains(out, leak) {
					t.Fatalf("escape %q via %s: the reply shows %q:\n%s", cmd, c.Nodes[node].Name, leak, out)
				}
			}
		}
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 1 {
		t.Fatalf("the directory outside was written to: %v", ents)
	}
	if _, err := os.Stat(filepath.Join(web, "big.bin")); err != nil {
		t.Fatalf("big.bin moved away: %v", err)
	}
	logData, _ := os.ReadFile(c.Nodes[master].LogPath)
	if !strings.Contains(string(logData), "ftp: path escape refused") {
		t.Fatal("the master's log has no refused escape")
	}
	// The listing leaves out the links that lead out of the site.
	out = mustLftp(t, c, via, login, "cls -1 /")
	for _, name := range []string{"etc", "passwd", "othersite", "outside"} {
		if strings.Contains("\n"+out, "\n"+name+"\n") {
			t.Fatalf("the listing shows %s:\n%s", name, out)
		}
	}
}

// An open FTP session keeps its site from being juggled: two sites on one
// master, both loaded over HTTP so that the balancer wants to move one,
// both with an FTP session open (a slow upload through another node to
// one, an idle session on the other). Nothing moves while the sessions
// are open; when the upload's session closes, its site moves.
func TestE2EFTPLeaseBlocksJuggling(t *testing.T) {
	if _, err := exec.LookPath("lftp"); err != nil {
		t.Fatal("lftp is needed (make deps installs it)")
	}
	c := newCluster(t, 3)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hot := createFTPSite(t, ctx, c, "hot", "hot.example", "up:pw-up")
	busy := createFTPSite(t, ctx, c, "busy", "busy.example", "idle:pw-idle")
	if busy.Master != hot.Master {
		if _, err := c.HCCtl(ctx, 0, "migrate", "busy", hot.Master); err != nil {
			t.Fatalf("hcctl migrate busy %s: %v", hot.Master, err)
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		_, err := c.WaitSite(wctx, 0, "busy", func(s admin.Site) bool { return s.Master == hot.Master && s.Phase == "active" })
		wcancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	master := c.NodeIndex(hot.Master)
	via := (master + 1) % 3
	t.Logf("hot and busy on %s; upload via %s", hot.Master, c.Nodes[via].Name)

	// The sessions: an idle one on busy, a slow upload (about 20 s) to hot.
	lftpBackground := func(node int, login, commands string) *exec.Cmd {
		host, port, _ := strings.Cut(c.Nodes[node].FTP, ":")
		cmd := exec.CommandContext(ctx, "lftp", "-c", "set net:max-retries 1; set ftp:ssl-allow no; set net:limit-rate 300000; "+
			fmt.Sprintf("open -u %s -p %s %s; ", login, port, host)+commands)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	idle := lftpBackground(master, "idle@busy,pw-idle", "cls / && sleep 300")
	defer func() { _ = idle.Process.Kill(); _ = idle.Wait() }()
	src := filepath.Join(t.TempDir(), "slow.bin")
	randomFile(t, src, 6<<20)
	upload := lftpBackground(via, "up@hot,pw-up", "put "+src+" -o /slow.bin")
	uploadDone := make(chan error, 1)
	go func() { uploadDone <- upload.Wait() }()
	for _, site := range []string{"hot", "busy"} {
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := c.WaitSite(wctx, 0, site, func(s admin.Site) bool { return s.FTPLeases > 0 })
		wcancel()
		if err != nil {
			t.Fatalf("no FTP lease seen on %s: %v", site, err)
		}
	}

	// HTTP load on both sites through their master: about 25 requests a
	// second each, the master far above the cluster's mean.
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	for _, domain := range []string{"hot.example", "busy.example"} {
		go func() {
			tick := time.NewTicker(40 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-loadCtx.Done():
					return
				case <-tick.C:
					_, _, _ = c.Do(loadCtx, master, "GET", domain, "/", nil)
				}
			}
		}()
	}

	// While the upload runs, neither site moves.
	var uploadErr error
	for waiting := true; waiting; {
		select {
		case uploadErr = <-uploadDone:
			waiting = false
		case <-time.After(500 * time.Millisecond):
			for _, site := range []string{"hot", "busy"} {
				s, err := c.Client(0).Site(ctx, site)
				if err == nil && s.Master != hot.Master {
					t.Fatalf("%s moved to %s while an FTP session was open", site, s.Master)
				}
			}
		}
	}
	if uploadErr != nil {
		t.Fatalf("slow upload: %v", uploadErr)
	}
	// Its session closed: hot moves (busy, still leased, stays).
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	moved, err := c.WaitSite(wctx, 0, "hot", func(s admin.Site) bool {
		return s.Master != "" && s.Master != hot.Master && s.Phase == "active"
	})
	wcancel()
	if err != nil {
		t.Fatalf("hot did not move after its FTP session closed: %v", err)
	}
	t.Logf("hot moved to %s after the upload's session closed", moved.Master)
	if s, err := c.Client(0).Site(ctx, "busy"); err != nil || s.Master != hot.Master {
		t.Fatalf("busy (still leased) moved: %+v %v", s, err)
	}
	// The upload is intact on the new master.
	back := filepath.Join(t.TempDir(), "back.bin")
	mustLftp(t, c, c.NodeIndex(moved.Master), "up@hot,pw-up", "get /slow.bin -o "+back)
	if fileSum(t, back) != fileSum(t, src) {
		t.Fatal("the upload differs after the move")
	}
}

// writeSelfSignedCert writes a certificate and key for 127.0.0.1.
func writeSelfSignedCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "ftp.pem"), filepath.Join(dir, "ftp.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// Explicit FTPS (AUTH TLS, protected data) through a non-master node,
// parallel sessions of one client (lftp pget -n 4: ranged downloads, REST)
// each holding a lease and all released at the end, and a full quota
// answered 552 with a clear message.
func TestE2EFTPSQuotaAndParallelSessions(t *testing.T) {
	if _, err := exec.LookPath("lftp"); err != nil {
		t.Fatal("lftp is needed (make deps installs it)")
	}
	if testing.Short() {
		t.Skip("end-to-end test (real processes)")
	}
	dir := t.TempDir()
	cert, key := writeSelfSignedCert(t, dir)
	ctx := context.Background()
	startCtx, cancel := context.WithTimeout(ctx, time.Minute)
	c, err := Start(startCtx, Options{Nodes: 2, Dir: dir, Bin: bins,
		Args: []string{"-log-level", "debug", "-ftp-tls-cert", cert, "-ftp-tls-key", key}})
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("node logs:\n%s", c.Logs(60))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := c.HCCtl(ctx, 0, "site", "create", "small", "--domain", "small.example", "--ftp-user", "carol:pw-carol", "--quota", "3M")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("hcctl site create: %v\n%s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	s, err := c.WaitSite(wctx, 0, "small", func(s admin.Site) bool { return s.Master != "" && s.Phase == "active" })
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	via := 1 - c.NodeIndex(s.Master)
	const login = "carol@small,pw-carol"
	const tlsOn = "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; "
	local := t.TempDir()
	file := filepath.Join(local, "two.bin")
	sum := randomFile(t, file, 2<<20)

	// FTPS through the non-master: the upload and the listing over TLS.
	out, err := lftpWith(c, via, login, tlsOn, "debug 3; put "+file+" -o /two.bin; cls -l /")
	// lftp warns of the self-signed certificate: the session did go over TLS.
	if err != nil || !strings.Contains(out, "Certificate verification") || !strings.Contains(out, "two.bin") {
		t.Fatalf("FTPS via %s: %v\n%s", c.Nodes[via].Name, err, out)
	}

	// pget -n 4: four sessions of one client, ranged downloads.
	back := filepath.Join(local, "back.bin")
	if out, err := lftp(c, via, login, "pget -n 4 /two.bin -o "+back); err != nil {
		t.Fatalf("pget: %v\n%s", err, out)
	}
	if fileSum(t, back) != sum {
		t.Fatal("the parallel download differs from the upload")
	}
	wctx, wcancel = context.WithTimeout(ctx, 30*time.Second)
	_, err = c.WaitSite(wctx, 0, "small", func(s admin.Site) bool { return s.FTPLeases == 0 })
	wcancel()
	if err != nil {
		t.Fatalf("leases not all released after the sessions ended: %v", err)
	}

	// The quota (3 MiB, the 2 MiB file and its snapshot count): another
	// 2 MiB does not fit.
	out, err = lftp(c, via, login, "put "+file+" -o /more.bin")
	if err == nil || !strings.Contains(out, "552") || !strings.Contains(out, "quota is full") {
		t.Fatalf("upload past the quota: %v\n%s", err, out)
	}
}

// An operator's move of a site during an upload through another node (a
// lease does not stop an operator): the upload is cut at the pause with a
// clear error, never acknowledged short; resumed (REST) it completes on the
// new master, intact.
func TestE2EFTPMoveDuringUpload(t *testing.T) {
	if _, err := exec.LookPath("lftp"); err != nil {
		t.Fatal("lftp is needed (make deps installs it)")
	}
	c := newCluster(t, 3)
	ctx := context.Background()
	s := createFTPSite(t, ctx, c, "mv", "mv.example", "dave:pw-dave")
	master := c.NodeIndex(s.Master)
	target := s.Replicas[0]
	via := (master + 1) % 3
	if c.Nodes[via].Name == target {
		via = (master + 2) % 3
	}
	const login = "dave@mv,pw-dave"
	src := filepath.Join(t.TempDir(), "slow.bin")
	sum := randomFile(t, src, 6<<20)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := lftpWith(c, via, login, "set ftp:ssl-allow no; set net:limit-rate 400000; ", "put "+src+" -o /slow.bin")
		done <- result{out, err}
	}()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := c.WaitSite(wctx, 0, "mv", func(s admin.Site) bool { return s.FTPLeases > 0 })
	wcancel()
	if err != nil {
		t.Fatalf("no lease seen: %v", err)
	}
	time.Sleep(2 * time.Second) // some bytes are in
	if out, err := c.HCCtl(ctx, 0, "migrate", "mv", target); err != nil {
		t.Fatalf("hcctl migrate mv %s: %v\n%s", target, err, out)
	}
	r := <-done
	wctx, wcancel = context.WithTimeout(ctx, time.Minute)
	moved, err := c.WaitSite(wctx, 0, "mv", func(s admin.Site) bool { return s.Master == target && s.Phase == "active" })
	wcancel()
	if err != nil {
		t.Fatal(err)
	}
	if r.err == nil {
		// lftp took the cut (a 4xx and a closed session) for a passing
		// failure, logged in again and sent the file anew, to the new
		// master: acknowledged only after that. The cut must have
		// happened (a second login through the entry node), and the file
		// must be whole with no resume.
		logs, err := os.ReadFile(c.Nodes[via].LogPath)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(logs), `msg="ftp: login" node=`+c.Nodes[via].Name+` component=ftp site=mv`); n < 2 {
			t.Fatalf("the upload was acknowledged in its first session although the move paused the site:\n%s", r.out)
		}
		t.Logf("lftp retried the cut upload by itself and finished it on %s", moved.Master)
	} else {
		if !strings.Contains(r.out, "moving") {
			t.Fatalf("the cut upload's error does not say the site is moving:\n%s", r.out)
		}
		t.Logf("the cut upload: %s", strings.TrimSpace(r.out))
		mustLftp(t, c, via, login, "put -c "+src+" -o /slow.bin")
	}
	back := filepath.Join(t.TempDir(), "back.bin")
	mustLftp(t, c, c.NodeIndex(moved.Master), login, "get /slow.bin -o "+back)
	if fileSum(t, back) != sum {
		t.Fatal("the file on the new master differs from the one uploaded")
	}
}

// A master that dies with an FTP session open on another node: failover is
// not held up by the lease, the session's lease moves to the new master
// (renewal), and the session's next command works there.
func TestE2EFTPFailoverWithSessionOpen(t *testing.T) {
	if _, err := exec.LookPath("lftp"); err != nil {
		t.Fatal("lftp is needed (make deps installs it)")
	}
	c := newCluster(t, 3)
	ctx := context.Background()
	s := createFTPSite(t, ctx, c, "fo", "fo.example", "erin:pw-erin")
	master := c.NodeIndex(s.Master)
	via := (master + 1) % 3
	observer := (master + 2) % 3
	local := t.TempDir()
	first, second := filepath.Join(local, "first.txt"), filepath.Join(local, "second.bin")
	if err := os.WriteFile(first, []byte("before the crash\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sum := randomFile(t, second, 1<<20)
	done := make(chan error, 1)
	var out string
	go func() {
		var err error
		out, err = lftp(c, via, "erin@fo,pw-erin", "put "+first+" -o /first.txt; sleep 25; put "+second+" -o /second.bin")
		done <- err
	}()
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	_, err := c.WaitSite(wctx, observer, "fo", func(s admin.Site) bool { return s.FTPLeases > 0 })
	wcancel()
	if err != nil {
		t.Fatalf("no lease seen: %v", err)
	}
	t.Logf("killing the master %s with a session open via %s", s.Master, c.Nodes[via].Name)
	c.Kill(master)
	wctx, wcancel = context.WithTimeout(ctx, 20*time.Second)
	after, err := c.WaitSite(wctx, observer, "fo", func(v admin.Site) bool {
		return v.Master != "" && v.Master != s.Master && v.Phase == "active" && v.FTPLeases > 0
	})
	wcancel()
	if err != nil {
		t.Fatalf("no failover with the lease on the new master: %v", err)
	}
	t.Logf("failed over to %s, lease there: %d", after.Master, after.FTPLeases)
	if err := <-done; err != nil {
		t.Fatalf("the session's command after the failover: %v\n%s", err, out)
	}
	back := filepath.Join(local, "back.bin")
	mustLftp(t, c, observer, "erin@fo,pw-erin", "get /second.bin -o "+back)
	if fileSum(t, back) != sum {
		t.Fatal("the upload after the failover differs")
	}
}
