package sites

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"
)

func TestAppArgv(t *testing.T) {
	for _, tc := range []struct {
		cmd  string
		want []string
	}{
		{"/usr/bin/app --port-from-env", []string{"/usr/bin/app", "--port-from-env"}},
		{"  /srv/app  ", []string{"/srv/app"}},
		{"app", []string{"/bin/sh", "-c", "app"}}, // PATH lookup: the shell's
		{"/srv/app && echo done", []string{"/bin/sh", "-c", "/srv/app && echo done"}},
		{"/srv/app $PORT", []string{"/bin/sh", "-c", "/srv/app $PORT"}},
		{"FOO=1 /srv/app", []string{"/bin/sh", "-c", "FOO=1 /srv/app"}},
		{"/srv/app 'quoted arg'", []string{"/bin/sh", "-c", "/srv/app 'quoted arg'"}},
	} {
		if got := appArgv(tc.cmd); !slices.Equal(got, tc.want) {
			t.Errorf("appArgv(%q) = %q, want %q", tc.cmd, got, tc.want)
		}
	}
}

// A node that crashed left an app running: the next supervisor on the
// same run directory kills its group, and leaves alone a process whose
// pid file lies (no HC_SITE of that site in its environment).
func TestLeftoverAppsKilled(t *testing.T) {
	dir := t.TempDir()
	start := func(env ...string) *exec.Cmd {
		cmd := exec.Command("/bin/sleep", "60")
		cmd.Env = env
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _, _ = cmd.Process.Wait() })
		return cmd
	}
	left := start("PATH=/bin", "HC_SITE=shop", "PORT=1")
	other := start("PATH=/bin", "HC_SITE=blog")
	for site, cmd := range map[string]*exec.Cmd{"shop": left, "news": other} {
		if err := os.WriteFile(filepath.Join(dir, site+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s := New(Config{RunDir: dir})
	defer s.Close()
	exited := make(chan struct{})
	go func() { _, _ = left.Process.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		t.Fatal("the leftover app of shop still runs")
	}
	if err := syscall.Kill(other.Process.Pid, 0); err != nil {
		t.Fatalf("a process that is not news's app was killed: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Fatalf("pid files left: %v", ents)
	}
}
