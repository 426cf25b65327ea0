package stream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// ProgressFunc is told the bytes sent so far and the estimated total. It is
// called from the sending goroutine and must not block.
type ProgressFunc func(doneBytes, totalBytes int64)

// ClientConfig configures a Client.
type ClientConfig struct {
	// BaseURL of the receiving node, e.g. "http://10.0.0.2:7946". Required.
	BaseURL string
	// Token is the shared secret. Required.
	Token string
	// Driver is the local (sending) driver. Required.
	Driver storage.Driver
	// HTTPClient; nil means a client without an overall timeout (streams
	// are long; cancel through the context).
	HTTPClient *http.Client
	// Logger; nil discards. Each push is logged at Debug (errors are
	// returned to the caller).
	Logger *slog.Logger
}

// Client pushes snapshots to one receiving node.
type Client struct {
	base   *url.URL
	token  string
	driver storage.Driver
	http   *http.Client
	log    *slog.Logger
}

// NewClient checks the configuration and makes a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Driver == nil {
		return nil, errors.New("stream client: no driver")
	}
	if cfg.Token == "" {
		return nil, errors.New("stream client: empty token")
	}
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("stream client: bad BaseURL %q", cfg.BaseURL)
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = &http.Client{}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{base: u, token: cfg.Token, driver: cfg.Driver, http: hc, log: log}, nil
}

func (c *Client) url(site storage.Site, action string, q url.Values) string {
	u := *c.base
	u.Path = strings.TrimSuffix(u.Path, "/") + PathPrefix + "sites/" + site.String() + "/" + action
	u.RawQuery = q.Encode()
	return u.String()
}

func (c *Client) do(req *http.Request, out any) error {
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var body errorBody
		data, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyBytesMax))
		if json.Unmarshal(data, &body) != nil {
			body.Message = strings.TrimSpace(string(data))
		}
		return remoteError(resp.StatusCode, body)
	}
	return json.NewDecoder(io.LimitReader(resp.Body, errorBodyBytesMax)).Decode(out)
}

// RemoteState asks the receiver for its epoch and snapshots of site.
func (c *Client) RemoteState(ctx context.Context, site storage.Site) (State, []storage.Snapshot, error) {
	var st State
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url(site, "snapshots", nil), nil)
	if err != nil {
		return st, nil, err
	}
	if err := c.do(req, &st); err != nil {
		return st, nil, fmt.Errorf("remote state of %s: %w", site, err)
	}
	var snaps []storage.Snapshot
	for _, s := range st.Snapshots {
		sn, err := fromJSON(s)
		if err != nil {
			continue // not ours to send against (e.g. a safety snapshot)
		}
		snaps = append(snaps, sn)
	}
	return st, snaps, nil
}

// Result describes a push.
type Result struct {
	Base           storage.SnapName // zero for a full stream
	Snapshot       storage.Snapshot // as the receiver reports it
	SentBytes      int64
	EstimatedBytes int64
	Duration       time.Duration
	UpToDate       bool // the receiver already had the snapshot; nothing sent
}

// Push brings the receiver's copy of site up to snapshot to: it asks for
// the receiver's snapshots, picks the newest common one as base (full
// stream when the receiver has none), and streams. It returns ErrFenced
// when the receiver has seen a newer epoch, ErrDiverged (the receiver must
// stash first) or ErrNoCommonSnapshot when no incremental is possible, and
// ErrTooManyStreams when the receiver is at its bound. Cancelling ctx cuts
// the stream; the receiver then stays at its previous snapshot.
func (c *Client) Push(ctx context.Context, site storage.Site, epoch storage.Epoch, to storage.SnapName, progress ProgressFunc) (Result, error) {
	started := time.Now()
	var res Result
	if site.IsZero() || to.IsZero() {
		return res, fmt.Errorf("%w: push needs a site and a snapshot", storage.ErrInvalidName)
	}
	st, remote, err := c.RemoteState(ctx, site)
	if err != nil {
		return res, err
	}
	if st.Exists {
		seen, err := storage.ParseEpoch(st.Epoch)
		if err != nil {
			return res, err
		}
		if err := storage.CheckFence(seen, epoch); err != nil {
			return res, fmt.Errorf("push %s: %w", site, err)
		}
	}
	local, err := c.driver.ListSnapshots(ctx, site)
	if err != nil {
		return res, fmt.Errorf("push %s: %w", site, err)
	}
	// Plan against local history up to to only.
	var upTo []storage.Snapshot
	found := false
	for _, s := range local {
		upTo = append(upTo, s)
		if s.Name == to {
			found = true
			break
		}
	}
	if !found {
		return res, fmt.Errorf("push %s: %w: snapshot %s", site, storage.ErrNoDataset, to)
	}
	if n := len(remote); n > 0 && remote[n-1].Name == to && remote[n-1].GUID == upTo[len(upTo)-1].GUID {
		res.UpToDate, res.Snapshot, res.Base = true, remote[n-1], to
		return res, nil
	}
	base, err := storage.PlanIncremental(upTo, remote)
	res.Base = base
	if err != nil {
		return res, fmt.Errorf("push %s: %w", site, err)
	}
	if !st.Exists {
		base = storage.SnapName{}
	}
	return c.send(ctx, site, epoch, base, to, progress, started)
}

// PushFrom is Push when the caller already knows the receiver's newest
// snapshot (base, from the receiver's answer to an offer): it streams the
// increment at once, without first asking for the receiver's snapshots and
// epoch (an HTTP round trip and three or four zfs commands there, while a
// move's clients wait). The receiver checks the base, the fence and
// divergence itself. If it refuses the base (its state moved on: it has
// the snapshot already, newer ones, or not the base) or the base is gone
// here, PushFrom falls back to Push, which plans from what the receiver
// reports. A zero base is Push.
func (c *Client) PushFrom(ctx context.Context, site storage.Site, epoch storage.Epoch, base, to storage.SnapName, progress ProgressFunc) (Result, error) {
	if base.IsZero() {
		return c.Push(ctx, site, epoch, to, progress)
	}
	if site.IsZero() || to.IsZero() {
		return Result{}, fmt.Errorf("%w: push needs a site and a snapshot", storage.ErrInvalidName)
	}
	res, err := c.send(ctx, site, epoch, base, to, progress, time.Now())
	if errors.Is(err, storage.ErrDiverged) || errors.Is(err, storage.ErrNoCommonSnapshot) || errors.Is(err, storage.ErrExists) ||
		errors.Is(err, storage.ErrNoDataset) {
		c.log.Debug("stream base refused: asking the receiver's state", "site", site.String(), "base", base.String(),
			"snapshot", to.String(), "err", err)
		return c.Push(ctx, site, epoch, to, progress)
	}
	return res, err
}

// send streams site's snapshot to (incremental from base unless zero).
func (c *Client) send(ctx context.Context, site storage.Site, epoch storage.Epoch, base, to storage.SnapName, progress ProgressFunc, started time.Time) (Result, error) {
	res := Result{Base: base}
	sendCtx, cancelSend := context.WithCancel(ctx)
	defer cancelSend()
	pr, pw := io.Pipe()
	counter := &progressWriter{w: pw, progress: progress}
	var wg sync.WaitGroup
	// The estimate only scales progress reports, so it is asked beside the
	// stream rather than before it (one or two zfs commands, 15-90 ms each
	// on zfs-fuse, that a move's final increment waited for); it is given
	// up when the stream ends first, and a failed estimate leaves the total
	// unknown (progress then reports what was sent as the total).
	estCtx, cancelEstimate := context.WithCancel(sendCtx)
	defer cancelEstimate()
	wg.Go(func() {
		est, err := c.driver.EstimateSendSize(estCtx, site, base, to)
		if err != nil {
			if estCtx.Err() == nil {
				c.log.Debug("stream size not estimated", "site", site.String(), "snapshot", to.String(), "err", err)
			}
			return
		}
		counter.setTotal(est)
	})
	var sendErr error
	wg.Go(func() {
		sendErr = c.driver.Send(sendCtx, site, base, to, counter)
		pw.CloseWithError(sendErr)
	})
	q := url.Values{}
	if !base.IsZero() {
		q.Set("base", base.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url(site, "receive", q), pr)
	if err != nil {
		cancelSend()
		pr.CloseWithError(err)
		wg.Wait()
		return res, err
	}
	req.ContentLength = -1
	req.Header.Set(headerEpoch, epoch.String())
	req.Header.Set("Content-Type", "application/octet-stream")
	var got SnapshotJSON
	postErr := c.do(req, &got)
	if postErr != nil {
		cancelSend()
	}
	pr.CloseWithError(errors.New("request finished"))
	cancelEstimate()
	wg.Wait()
	res.SentBytes, res.EstimatedBytes = counter.done(), counter.estimate()
	res.Duration = time.Since(started)
	if postErr != nil {
		return res, fmt.Errorf("push %s@%s: %w", site, to, postErr)
	}
	if sendErr != nil {
		return res, fmt.Errorf("push %s@%s: send: %w", site, to, sendErr)
	}
	if res.Snapshot, err = fromJSON(got); err != nil {
		return res, err
	}
	if progress != nil {
		progress(res.SentBytes, max(res.SentBytes, res.EstimatedBytes))
	}
	c.log.Debug("stream pushed", "site", site.String(), "snapshot", to.String(), "base", base.String(), "epoch", epoch.String(),
		"bytes", res.SentBytes, "estimated", res.EstimatedBytes, "duration", res.Duration)
	return res, nil
}

type progressWriter struct {
	w        io.Writer
	total    int64
	progress ProgressFunc
	mu       sync.Mutex
	n        int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.mu.Lock()
	p.n += int64(n)
	done, total := p.n, p.total
	p.mu.Unlock()
	if p.progress != nil && n > 0 {
		p.progress(done, max(done, total))
	}
	return n, err
}

// setTotal records the estimated size of the stream.
func (p *progressWriter) setTotal(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.total = n
}

// estimate is the estimated size (0: not known).
func (p *progressWriter) estimate() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.total
}

func (p *progressWriter) done() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}
