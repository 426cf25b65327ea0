package main

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// TestPerfEventsPattern: -perf-events takes perf event names only, never
// something perf would read as an option or a file.
func TestPerfEventsPattern(t *testing.T) {
	for _, ok := range []string{"", "context-switches", "context-switches,cpu-migrations", "syscalls:sys_enter_write,power:cpu_idle"} {
		if !perfEventsPattern.MatchString(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"-o/tmp/x", "cycles,-a", "a b", "cycles,", ",cycles", "cycles;rm", "--output=x"} {
		if perfEventsPattern.MatchString(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// TestCnfValue reads the option file as runtime/sites writes it.
func TestCnfValue(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "mysqld.pid")
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(4242)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cnf := filepath.Join(dir, "my.cnf")
	text := "[mariadbd]\ndatadir=/d\nsocket=/run/s.sock\npid-file=" + pidFile + "\n"
	if err := os.WriteFile(cnf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := cnfValue(cnf, "socket"); err != nil || v != "/run/s.sock" {
		t.Fatalf("socket: %q %v", v, err)
	}
	if _, err := cnfValue(cnf, "port"); err == nil {
		t.Fatal("a missing key was found")
	}
	if pid := serverPidOf(cnf); pid != 4242 {
		t.Fatalf("server pid %d, want 4242", pid)
	}
}
