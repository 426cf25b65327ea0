package host

import (
	"fmt"
	"slices"
	"testing"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
	"github.com/hybridcluster/hybridcluster/runtime/host/hostpb"
)

// TestEnvelopeNeedsNodeToken: protoactor's remote authenticates nobody, so
// anyone who reaches a node's actor port can send it an envelope. One
// without the node token is dropped (here: a removal of a member, which
// would have taken effect); the same envelope with the token is taken.
func TestEnvelopeNeedsNodeToken(t *testing.T) {
	c := startCluster(t, 2)
	target := c.nodes["n1"].host
	sys := actor.NewActorSystem()
	r := remote.NewRemote(sys, remote.Configure("127.0.0.1", freePort(t)))
	r.Start()
	t.Cleanup(func() { r.Shutdown(false); sys.Shutdown() })
	payload, err := anypb.New(&m.RemoveNode{Node: "n2"})
	if err != nil {
		t.Fatal(err)
	}
	send := func(token string) {
		sys.Root.Send(actor.NewPID(target.members["n1"].ActorAddr, routerName), &hostpb.Envelope{
			Kind: uint32(core.KindNode), Node: "n1", FromNode: "n2", Msg: payload, Token: token})
	}
	drops := target.Drops()
	send("not-the-token")
	send("")
	eventually(t, "forged envelopes dropped", func() error {
		if got := target.Drops() - drops; got < 2 {
			return fmt.Errorf("%d drops", got)
		}
		return nil
	})
	if !slices.Contains(target.Members(), "n2") {
		t.Fatal("an envelope without the node token removed n2")
	}
	send("test-token")
	eventually(t, "authenticated removal taken", func() error {
		if slices.Contains(target.Members(), "n2") {
			return fmt.Errorf("n2 still a member")
		}
		return nil
	})
}
