package node

import (
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/actors/core"
	m "github.com/hybridcluster/hybridcluster/messages"
)

// A node with no leader (not booted yet: it knows no live member) answers a
// cluster query itself, UNAVAILABLE, instead of sending it nowhere; a query
// without a reply node is answered to this node's client.
func TestAdminQueryWithoutLeader(t *testing.T) {
	n := New("n1")
	env := &core.Env{Self: core.NodeAddr("n1"), Now: time.Unix(1000, 0), Config: core.Default()}
	for _, tc := range []struct {
		reply, wantTo string
	}{{"n2", "n2"}, {"", "n1"}} {
		fx := n.Step(env, &m.AdminQuery{QueryId: 7, ReplyNode: tc.reply, Kind: m.AdminQueryKind_ADMIN_QUERY_CLUSTER})
		if len(fx) != 1 {
			t.Fatalf("reply %q: %d effects, want one answer: %v", tc.reply, len(fx), fx)
		}
		s, ok := fx[0].(core.Send)
		v, isView := s.Msg.(*m.AdminView)
		if !ok || !isView || s.To != core.ClientAddr(tc.wantTo) {
			t.Fatalf("reply %q: got %#v, want an AdminView to client@%s", tc.reply, fx[0], tc.wantTo)
		}
		if v.QueryId != 7 || v.Code != m.Code_CODE_UNAVAILABLE || v.Node != "n1" || v.Detail == "" {
			t.Fatalf("reply %q: answer %v, want query 7 UNAVAILABLE from n1 with a detail", tc.reply, v)
		}
	}
}
