package storagetest

import (
	"testing"

	"github.com/hybridcluster/hybridcluster/runtime/storage/portable"
)

// PortablePair is two portable drivers, each in a directory of its own
// that the test removes.
func PortablePair(t *testing.T) (*portable.Driver, *portable.Driver) {
	t.Helper()
	a, err := portable.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := portable.New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	return a, b
}
