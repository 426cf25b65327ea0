package storagetest_test

import (
	"testing"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/storagetest"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

func TestConformance(t *testing.T) {
	t.Run("Portable", func(t *testing.T) {
		storagetest.Run(t, storagetest.Harness{NewPair: func(t *testing.T) (storage.Driver, storage.Driver) {
			a, b := storagetest.PortablePair(t)
			return a, b
		}})
	})
	t.Run("ZFS", func(t *testing.T) {
		zfstest.Prepare(t)
		storagetest.Run(t, storagetest.Harness{NewPair: func(t *testing.T) (storage.Driver, storage.Driver) {
			log := zfstest.Logger()
			return zfstest.NewPool(t, log), zfstest.NewPool(t, log)
		}})
	})
}
