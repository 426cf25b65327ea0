package stream_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
	"github.com/hybridcluster/hybridcluster/runtime/storage/storagetest"
	"github.com/hybridcluster/hybridcluster/runtime/storage/stream"
	"github.com/hybridcluster/hybridcluster/runtime/storage/zfsdriver/zfstest"
)

const token = "test-shared-secret"

func TestStreams(t *testing.T) {
	t.Run("Portable", func(t *testing.T) {
		runStreamTests(t, func(t *testing.T) (storage.Driver, storage.Driver) {
			a, b := storagetest.PortablePair(t)
			return a, b
		})
	})
	t.Run("ZFS", func(t *testing.T) {
		zfstest.Prepare(t)
		runStreamTests(t, func(t *testing.T) (storage.Driver, storage.Driver) {
			return zfstest.NewPool(t, zfstest.Logger()), zfstest.NewPool(t, zfstest.Logger())
		})
	})
}

type env struct {
	sender, receiver storage.Driver
	srv              *httptest.Server
	client           *stream.Client
	stateAsked       atomic.Int64 // GETs of the receiver's state
	handling         atomic.Int64 // requests whose handler has not returned yet
	bodyRead         chan string  // the path of each receive whose body the server began to read (it holds a stream slot then)
}

// firstRead reports the first Read of a request body.
type firstRead struct {
	io.ReadCloser
	once   sync.Once
	notify func()
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.once.Do(f.notify)
	return f.ReadCloser.Read(p)
}

// awaitBodyRead waits until the server reads the body of a receive at path.
func (e *env) awaitBodyRead(t *testing.T, path string) {
	t.Helper()
	timeout := time.After(handlersDrainMax)
	for {
		select {
		case got := <-e.bodyRead:
			if got == path {
				return
			}
		case <-timeout:
			t.Fatalf("the server did not read %s within %v", path, handlersDrainMax)
		}
	}
}

// handlersDrainMax bounds awaitIdle: a handler still running after it failed the test.
const handlersDrainMax = 10 * time.Second

// awaitIdle waits for every request handler to return. A client can see its
// request end (it closed the body, or read the reply) before the server's
// handler has returned and given back its stream slot.
func (e *env) awaitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(handlersDrainMax)
	for e.handling.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d stream handlers still running after %v", e.handling.Load(), handlersDrainMax)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newEnv(t *testing.T, a, b storage.Driver, bound int) *env {
	server, err := stream.NewServer(stream.ServerConfig{Driver: b, Token: token, StreamsConcurrentMax: bound})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{sender: a, receiver: b, bodyRead: make(chan string, 64)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.handling.Add(1)
		defer e.handling.Add(-1)
		if r.Method == http.MethodGet {
			e.stateAsked.Add(1)
		}
		if r.Method == http.MethodPost {
			path := r.URL.Path
			r.Body = &firstRead{ReadCloser: r.Body, notify: func() {
				select {
				case e.bodyRead <- path:
				default: // nobody waits for these; the buffer is only for the test that does
				}
			}}
		}
		server.ServeHTTP(w, r)
	})) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	client, err := stream.NewClient(stream.ClientConfig{BaseURL: srv.URL, Token: token, Driver: a})
	if err != nil {
		t.Fatal(err)
	}
	e.srv, e.client = srv, client
	return e
}

func must(t *testing.T, err error, what string) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func snapNames(t *testing.T, d storage.Driver, site storage.Site) string {
	t.Helper()
	snaps, err := d.ListSnapshots(context.Background(), site)
	must(t, err, "list")
	var names []string
	for _, s := range snaps {
		names = append(names, s.Name.String())
	}
	return strings.Join(names, ",")
}

func runStreamTests(t *testing.T, pair func(t *testing.T) (storage.Driver, storage.Driver)) {
	a, b := pair(t)
	ctx := context.Background()
	e := newEnv(t, a, b, 1)
	epoch := storage.Epoch{Term: 3, Node: "n1"}

	t.Run("PushFullThenIncremental", func(t *testing.T) {
		site := storage.MustSite("push")
		must(t, a.Create(ctx, site, 0), "create")
		storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("hello"))
		storagetest.WriteFile(t, ctx, a, site, "big.bin", make([]byte, 2<<20))
		_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
		must(t, err, "snapshot")
		var calls atomic.Int64
		var lastDone, lastTotal atomic.Int64
		progress := func(done, total int64) {
			calls.Add(1)
			lastDone.Store(done)
			lastTotal.Store(total)
		}
		res, err := e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), progress)
		must(t, err, "full push")
		if !res.Base.IsZero() || res.SentBytes == 0 || calls.Load() == 0 || lastDone.Load() != res.SentBytes || lastTotal.Load() < res.SentBytes {
			t.Fatalf("full push result %+v, progress calls %d last %d/%d", res, calls.Load(), lastDone.Load(), lastTotal.Load())
		}
		storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("hello again"))
		_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
		must(t, err, "snapshot s2")
		res, err = e.client.Push(ctx, site, epoch, storage.MustSnap("s2"), progress)
		must(t, err, "incremental push")
		if res.Base.String() != "s1" || res.SentBytes > 1<<20 {
			t.Fatalf("incremental push result %+v", res)
		}
		if got := snapNames(t, b, site); got != "s1,s2" {
			t.Fatalf("receiver snapshots %s", got)
		}
		ma, _ := a.Mountpoint(ctx, site)
		mb, _ := b.Mountpoint(ctx, site)
		ha, hb := storagetest.HashTree(t, ma), storagetest.HashTree(t, mb)
		if len(ha) != len(hb) || ha["index.html"] != hb["index.html"] || ha["big.bin"] != hb["big.bin"] {
			t.Fatalf("trees differ: %v vs %v", ha, hb)
		}
		res, err = e.client.Push(ctx, site, epoch, storage.MustSnap("s2"), nil)
		must(t, err, "push up to date")
		if !res.UpToDate {
			t.Fatalf("second push of s2 = %+v, want UpToDate", res)
		}

		// With the receiver's newest snapshot known, the increment goes at
		// once, without asking for the receiver's state.
		storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("third"))
		_, err = a.Snapshot(ctx, site, storage.MustSnap("s3"))
		must(t, err, "snapshot s3")
		asked := e.stateAsked.Load()
		res, err = e.client.PushFrom(ctx, site, epoch, storage.MustSnap("s2"), storage.MustSnap("s3"), nil)
		must(t, err, "push from a known base")
		if res.Base.String() != "s2" || e.stateAsked.Load() != asked {
			t.Fatalf("push from s2 = %+v, receiver's state asked %d times", res, e.stateAsked.Load()-asked)
		}
		// A stale base (the receiver has moved on) falls back to planning
		// from the receiver's state; so does a snapshot it has already.
		storagetest.WriteFile(t, ctx, a, site, "index.html", []byte("fourth"))
		_, err = a.Snapshot(ctx, site, storage.MustSnap("s4"))
		must(t, err, "snapshot s4")
		res, err = e.client.PushFrom(ctx, site, epoch, storage.MustSnap("s2"), storage.MustSnap("s4"), nil)
		must(t, err, "push from a stale base")
		if res.Base.String() != "s3" || e.stateAsked.Load() == asked {
			t.Fatalf("push from stale s2 = %+v, want planned from s3", res)
		}
		res, err = e.client.PushFrom(ctx, site, epoch, storage.MustSnap("s3"), storage.MustSnap("s4"), nil)
		must(t, err, "push of a snapshot the receiver has")
		if !res.UpToDate {
			t.Fatalf("push of s4 again = %+v, want UpToDate", res)
		}
		if got := snapNames(t, b, site); got != "s1,s2,s3,s4" {
			t.Fatalf("receiver snapshots %s", got)
		}
		mb, _ = b.Mountpoint(ctx, site)
		if got := storagetest.HashTree(t, mb)["index.html"]; got != storagetest.HashTree(t, ma)["index.html"] {
			t.Fatal("receiver's index.html differs from the sender's after the pushes from known bases")
		}
	})

	t.Run("WrongTokenRefused", func(t *testing.T) {
		bad, err := stream.NewClient(stream.ClientConfig{BaseURL: e.srv.URL, Token: "wrong", Driver: a})
		must(t, err, "client")
		_, err = bad.Push(ctx, storage.MustSite("push"), epoch, storage.MustSnap("s2"), nil)
		if !errors.Is(err, stream.ErrUnauthorized) {
			t.Fatalf("push with wrong token: %v", err)
		}
		if _, err := stream.NewServer(stream.ServerConfig{Driver: b}); err == nil {
			t.Fatal("server without token accepted")
		}
	})

	t.Run("FencedEpochRefused", func(t *testing.T) {
		site := storage.MustSite("fenced")
		must(t, a.Create(ctx, site, 0), "create")
		storagetest.WriteFile(t, ctx, a, site, "f", []byte("1"))
		_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
		must(t, err, "snapshot")
		_, err = e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), nil)
		must(t, err, "push")
		must(t, b.Fence(ctx, site, storage.Epoch{Term: 9, Node: "n2"}), "fence")
		storagetest.WriteFile(t, ctx, a, site, "f", []byte("2"))
		_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
		must(t, err, "snapshot")
		_, err = e.client.Push(ctx, site, epoch, storage.MustSnap("s2"), nil)
		if !errors.Is(err, storage.ErrFenced) {
			t.Fatalf("push at an older epoch: %v", err)
		}
		// The receiver enforces it too, for a sender that skips the check.
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+stream.PathPrefix+"sites/fenced/receive?base=s1", strings.NewReader("x"))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-HC-Epoch", epoch.String())
		resp, err := http.DefaultClient.Do(req)
		must(t, err, "raw post")
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "fenced") {
			t.Fatalf("raw fenced post: %d %s", resp.StatusCode, body)
		}
		if got := snapNames(t, b, site); got != "s1" {
			t.Fatalf("receiver snapshots %s", got)
		}
	})

	t.Run("ConcurrentStreamBound", func(t *testing.T) {
		site := storage.MustSite("bound")
		must(t, a.Create(ctx, site, 0), "create")
		storagetest.WriteFile(t, ctx, a, site, "f", []byte("1"))
		_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
		must(t, err, "snapshot")
		// Occupy the only slot with a stream that does not finish.
		pr, pw := io.Pipe()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+stream.PathPrefix+"sites/other/receive", pr)
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("X-HC-Epoch", epoch.String())
		done := make(chan struct{})
		go func() {
			defer close(done)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		_, _ = pw.Write([]byte("HCSTREAM1\n"))
		e.awaitBodyRead(t, stream.PathPrefix+"sites/other/receive") // the server holds the slot while it reads
		_, err = e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), nil)
		if !errors.Is(err, stream.ErrTooManyStreams) || !errors.Is(err, storage.ErrBusy) {
			t.Fatalf("push at the bound: %v", err)
		}
		var re *stream.RemoteError
		if !errors.As(err, &re) || re.Status != http.StatusServiceUnavailable {
			t.Fatalf("push at the bound: want HTTP 503, got %v", err)
		}
		pw.CloseWithError(errors.New("test done"))
		<-done
		e.awaitIdle(t) // the occupying stream's handler gives its slot back as it returns
		_, err = e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), nil)
		must(t, err, "push after the slot freed")
	})

	t.Run("CancelledStreamLeavesPreviousSnapshot", func(t *testing.T) {
		site := storage.MustSite("cut")
		must(t, a.Create(ctx, site, 0), "create")
		storagetest.WriteFile(t, ctx, a, site, "f", []byte("1"))
		_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
		must(t, err, "snapshot")
		_, err = e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), nil)
		must(t, err, "push s1")
		big := make([]byte, 8<<20)
		for i := range big {
			big[i] = byte(i * 7)
		}
		storagetest.WriteFile(t, ctx, a, site, "big", big)
		_, err = a.Snapshot(ctx, site, storage.MustSnap("s2"))
		must(t, err, "snapshot s2")
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err = e.client.Push(cctx, site, epoch, storage.MustSnap("s2"), func(done, total int64) {
			if done > 256<<10 {
				cancel()
			}
		})
		if err == nil {
			t.Fatal("cancelled push succeeded")
		}
		// The receiver notices the cut asynchronously; wait (bounded) for its lock.
		deadline := time.Now().Add(10 * time.Second)
		for snapNames(t, b, site) != "s1" && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := snapNames(t, b, site); got != "s1" {
			t.Fatalf("after a cut stream the receiver has %s", got)
		}
		e.awaitIdle(t) // the cut receive holds its stream slot until its handler returns
		res, err := e.client.Push(ctx, site, epoch, storage.MustSnap("s2"), nil)
		must(t, err, "push after cut")
		if res.Base.String() != "s1" {
			t.Fatalf("push after cut: %+v", res)
		}
	})
}

// estimating is a sender whose size estimates are made to wait, fail or
// come first, as a test asks.
type estimating struct {
	storage.Driver
	estimate func(ctx context.Context) (int64, error)
	// estimated, when set, is waited for by Send.
	estimated chan struct{}
}

func (e *estimating) EstimateSendSize(ctx context.Context, _ storage.Site, _, _ storage.SnapName) (int64, error) {
	n, err := e.estimate(ctx)
	if e.estimated != nil {
		close(e.estimated)
	}
	return n, err
}

func (e *estimating) Send(ctx context.Context, site storage.Site, from, to storage.SnapName, w io.Writer) error {
	if e.estimated != nil {
		<-e.estimated
	}
	return e.Driver.Send(ctx, site, from, to, w)
}

// A push does not wait for its size estimate (it only scales progress
// reports): a stream goes while the estimate is still being made (which is
// then given up), or after it failed; an estimate that comes is the total.
func TestPushDoesNotWaitForTheEstimate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	setup := func(t *testing.T, est *estimating) (*env, storage.Site) {
		a, b := storagetest.PortablePair(t)
		site := storage.MustSite("estimated")
		must(t, a.Create(ctx, site, 0), "create")
		storagetest.WriteFile(t, ctx, a, site, "big.bin", make([]byte, 1<<20))
		_, err := a.Snapshot(ctx, site, storage.MustSnap("s1"))
		must(t, err, "snapshot")
		est.Driver = a
		return newEnv(t, est, b, 0), site
	}
	epoch := storage.Epoch{Term: 1, Node: "a"}

	t.Run("Slow", func(t *testing.T) {
		given := make(chan struct{})
		est := &estimating{estimate: func(ctx context.Context) (int64, error) {
			<-ctx.Done() // until the push gives it up
			close(given)
			return 0, ctx.Err()
		}}
		e, site := setup(t, est)
		done := make(chan error, 1)
		go func() {
			res, err := e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), nil)
			if err == nil && (res.SentBytes == 0 || res.EstimatedBytes != 0) {
				err = errors.New("unexpected result")
			}
			done <- err
		}()
		select {
		case err := <-done:
			must(t, err, "push while the estimate waits")
		case <-time.After(30 * time.Second):
			t.Fatal("the push waited for its size estimate")
		}
		select {
		case <-given:
		case <-time.After(10 * time.Second):
			t.Fatal("the estimate was not given up when the push ended")
		}
	})
	t.Run("Failed", func(t *testing.T) {
		e, site := setup(t, &estimating{estimate: func(context.Context) (int64, error) {
			return 0, errors.New("no estimate today")
		}})
		var lastDone, lastTotal atomic.Int64
		res, err := e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), func(done, total int64) {
			lastDone.Store(done)
			lastTotal.Store(total)
		})
		must(t, err, "push after a failed estimate")
		if res.SentBytes == 0 || lastDone.Load() != res.SentBytes || lastTotal.Load() != res.SentBytes {
			t.Fatalf("push %+v, last progress %d/%d; want the bytes sent as the total", res, lastDone.Load(), lastTotal.Load())
		}
	})
	t.Run("Known", func(t *testing.T) {
		const want = 1 << 30
		e, site := setup(t, &estimating{estimated: make(chan struct{}), estimate: func(context.Context) (int64, error) {
			return want, nil
		}})
		var lastTotal atomic.Int64
		res, err := e.client.Push(ctx, site, epoch, storage.MustSnap("s1"), func(_, total int64) { lastTotal.Store(total) })
		must(t, err, "push")
		if res.EstimatedBytes != want || lastTotal.Load() != want {
			t.Fatalf("push %+v, last progress total %d; want the estimate %d", res, lastTotal.Load(), want)
		}
	})
}
