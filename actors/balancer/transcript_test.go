package balancer_test

import (
	"testing"

	"github.com/hybridcluster/hybridcluster/actors/actortest"
)

func TestTranscripts(t *testing.T) { actortest.Walk(t, "testdata") }
