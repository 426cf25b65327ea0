package host

import (
	"context"
	"io"
	"net/http"
	"testing"
)

// TestHandleInternal: a registered endpoint answers only with the node
// token, and its handler never sees the token.
func TestHandleInternal(t *testing.T) {
	c := startCluster(t, 1)
	h := c.nodes["n1"].host
	h.HandleInternal(InternalPrefix+"echo/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok token="+r.Header.Get(HeaderToken))
	}))
	base, ok := h.InternalURL("n1")
	if !ok {
		t.Fatal("no internal URL for n1")
	}
	get := func(token string) (int, string) {
		req, _ := http.NewRequest("GET", base+InternalPrefix+"echo/x", nil)
		if token != "" {
			req.Header.Set(HeaderToken, token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d, want 401", code)
	}
	if code, _ := get("wrong"); code != http.StatusUnauthorized {
		t.Fatalf("wrong token: %d, want 401", code)
	}
	if code, body := get("test-token"); code != 200 || body != "ok token=" {
		t.Fatalf("good token: %d %q", code, body)
	}
	if _, ok := h.InternalURL("nobody"); ok {
		t.Fatal("an InternalURL for a node not in the list")
	}
}

// TestAdmitCountsLoad: work admitted through Admit (MySQL commands, FTP
// operations) counts as the site's load for the balancer, as HTTP requests
// forwarded straight to the master do; work refused does not.
func TestAdmitCountsLoad(t *testing.T) {
	c := startCluster(t, 1)
	h := c.nodes["n1"].host
	h.gates.setRoute("db", true, nil)
	h.gates.setStarted("db", true)
	h.activity.drainLoad()
	for range 3 {
		release, ok := h.Admit(context.Background(), "db")
		if !ok {
			t.Fatal("an open site refused admission")
		}
		release()
	}
	if _, ok := h.Admit(context.Background(), "closed"); ok {
		t.Fatal("a site not served here was admitted")
	}
	if got := h.activity.drainLoad(); got["db"] != 3 || got["closed"] != 0 {
		t.Fatalf("load counted %v, want db=3 and nothing for closed", got)
	}
}
