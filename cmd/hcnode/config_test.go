package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
)

func loadFile(t *testing.T, yaml string) (*Config, error) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "hc.yaml")
	if err := os.WriteFile(f, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return loadConfig([]string{"-config", f, "-data-dir", t.TempDir()}, func(string) string { return "token" })
}

// The snapshots section sets the actors' retention; without it the
// embedded defaults apply; a negative or unparsable duration is refused.
func TestSnapshotRetentionFromTheFile(t *testing.T) {
	c, err := loadFile(t, "node: n1\nsnapshots: {keep_all: 2m, keep_minutely: 30m, keep_hourly: 12h, keep_daily: 72h, low_free_mib: 256, low_free_percent: 5}\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.actorConfig(); got.StorageLowBytes != 256<<20 || got.StorageLowPercent != 5 {
		t.Fatalf("low_free_mib 256, low_free_percent 5: StorageLowBytes %d, StorageLowPercent %d", got.StorageLowBytes, got.StorageLowPercent)
	}
	want := core.Retention{KeepAll: 2 * time.Minute, KeepMinutely: 30 * time.Minute, KeepHourly: 12 * time.Hour, KeepDaily: 72 * time.Hour}
	if got := c.actorConfig().Retention; got != want {
		t.Fatalf("retention %+v, want %+v", got, want)
	}
	c, err = loadFile(t, "node: n1\nsnapshots: {keep_all: 5m}\n")
	if err != nil {
		t.Fatal(err)
	}
	def := core.Default().Retention
	if got := c.actorConfig().Retention; got.KeepAll != 5*time.Minute || got.KeepMinutely != def.KeepMinutely || got.KeepDaily != def.KeepDaily {
		t.Fatalf("one key set: retention %+v, want the defaults but keep_all", got)
	}
	c, err = loadFile(t, "node: n1\n")
	if err != nil {
		t.Fatal(err)
	}
	if got := c.actorConfig(); got.Retention != def || got.StorageLowBytes != core.Default().StorageLowBytes || got.StorageLowPercent != core.Default().StorageLowPercent {
		t.Fatalf("no snapshots section: retention %+v, low %d, want the defaults", got.Retention, got.StorageLowBytes)
	}
	if _, err := loadFile(t, "node: n1\nsnapshots: {keep_hourly: -1h}\n"); err == nil || !strings.Contains(err.Error(), "keep_hourly") {
		t.Fatalf("a negative duration: %v, want an error naming keep_hourly", err)
	}
	if _, err := loadFile(t, "node: n1\nsnapshots: {low_free_percent: 101}\n"); err == nil || !strings.Contains(err.Error(), "low_free_percent") {
		t.Fatalf("low_free_percent 101: %v, want an error naming it", err)
	}
	if _, err := loadFile(t, "node: n1\nsnapshots: {keep_all: ten minutes}\n"); err == nil {
		t.Fatal("an unparsable duration was accepted")
	}
}

// A configuration with several problems is refused with all of them: the
// missing tokens and a setting out of range.
func TestConfigReportsEveryProblem(t *testing.T) {
	f := filepath.Join(t.TempDir(), "hc.yaml")
	if err := os.WriteFile(f, []byte("node: n1\nsnapshots: {low_free_percent: 150}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := loadConfig([]string{"-config", f, "-data-dir", t.TempDir()}, func(string) string { return "" })
	if err == nil {
		t.Fatal("accepted without tokens and with low_free_percent 150")
	}
	for _, want := range []string{"node token", "admin token", "low_free_percent"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}
