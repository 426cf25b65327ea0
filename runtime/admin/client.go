package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// APIError is an error answer of the admin endpoint.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// maxAnswerBytes bounds an answer the client reads.
const maxAnswerBytes = 32 << 20

// Client is a typed client of the admin endpoint. Each call is bounded by
// its context only (give the http.Client no Timeout if you follow Events).
type Client struct {
	endpoint string
	token    string
	hc       *http.Client
}

// NewClient returns a client of the endpoint (e.g. "http://127.0.0.1:7080")
// authenticating with token; httpClient nil means http.DefaultClient.
func NewClient(endpoint, token string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = http.DefaultClient
	}
	return &Client{endpoint: strings.TrimRight(endpoint, "/"), token: token, hc: httpClient}
}

func (c *Client) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.endpoint+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return req, nil
}

// do sends a request and decodes a 2xx JSON answer into out (if non-nil).
func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	req, err := c.newRequest(ctx, method, path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return readAPIError(resp)
	}
	if out == nil {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswerBytes))
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswerBytes)).Decode(out); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

// readAPIError turns an error answer into an *APIError, JSON or not.
func readAPIError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb ErrorBody
	if json.Unmarshal(b, &eb) == nil && eb.Error.Code != "" {
		return &APIError{Status: resp.StatusCode, Code: eb.Error.Code, Message: eb.Error.Message}
	}
	msg := strings.TrimSpace(string(b))
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	if msg == "" {
		msg = http.StatusText(resp.StatusCode)
	}
	return &APIError{Status: resp.StatusCode, Code: codeForStatus(resp.StatusCode), Message: msg}
}

func codeForStatus(status int) string {
	switch status {
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusBadRequest:
		return CodeBadRequest
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusConflict:
		return CodeConflict
	case http.StatusMethodNotAllowed:
		return CodeNotAllowed
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	return CodeInternal
}

func sitePath(site string, rest ...string) string {
	p := "/v1/sites/" + url.PathEscape(site)
	for _, r := range rest {
		p += "/" + r
	}
	return p
}

// Sites lists every site.
func (c *Client) Sites(ctx context.Context) ([]Site, error) {
	var out SiteList
	err := c.do(ctx, http.MethodGet, "/v1/sites", nil, &out)
	return out.Sites, err
}

// Site shows one site.
func (c *Client) Site(ctx context.Context, name string) (*Site, error) {
	var out Site
	if err := c.do(ctx, http.MethodGet, sitePath(name), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// CreateSite asks for a new site; the answer is the site, being placed.
func (c *Client) CreateSite(ctx context.Context, req CreateSite) (*Site, error) {
	var out SiteBody
	if err := c.do(ctx, http.MethodPost, "/v1/sites", req, &out); err != nil {
		return nil, err
	}
	return &out.Site, nil
}

// DeleteSite asks the cluster to delete a site: it stops being served
// everywhere and every copy is stashed whole (nothing is destroyed). The
// answer is the site as it was when asked.
func (c *Client) DeleteSite(ctx context.Context, name string) (*Site, error) {
	var out SiteBody
	if err := c.do(ctx, http.MethodDelete, sitePath(name), nil, &out); err != nil {
		return nil, err
	}
	return &out.Site, nil
}

// Migrate asks the site's master to move the site to node; the answer is
// the site as it was when asked.
func (c *Client) Migrate(ctx context.Context, site, node string) (*Site, error) {
	var out SiteBody
	if err := c.do(ctx, http.MethodPost, sitePath(site, "migrate"), MigrateRequest{To: node}, &out); err != nil {
		return nil, err
	}
	return &out.Site, nil
}

// Snapshots lists the snapshots of the site's master copy.
func (c *Client) Snapshots(ctx context.Context, site string) (*SnapshotList, error) {
	var out SnapshotList
	if err := c.do(ctx, http.MethodGet, sitePath(site, "snapshots"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// TakeSnapshot asks the site's master for a snapshot now.
func (c *Client) TakeSnapshot(ctx context.Context, site string) error {
	return c.do(ctx, http.MethodPost, sitePath(site, "snapshots"), nil, nil)
}

// Mount asks the site's master to mount one of its snapshots read-only; the
// answer names the node and the directory holding the snapshot's files.
func (c *Client) Mount(ctx context.Context, site, snapshot string) (*Mount, error) {
	var out Mount
	if err := c.do(ctx, http.MethodPost, sitePath(site, "snapshots", url.PathEscape(snapshot), "mount"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Unmount asks the site's master to end the read-only mount of a snapshot.
func (c *Client) Unmount(ctx context.Context, site, snapshot string) error {
	return c.do(ctx, http.MethodDelete, sitePath(site, "snapshots", url.PathEscape(snapshot), "mount"), nil, nil)
}

// Rollback asks the site's master to roll the site back to snapshot.
func (c *Client) Rollback(ctx context.Context, site, snapshot string) error {
	return c.do(ctx, http.MethodPost, sitePath(site, "rollback"), RollbackRequest{Snapshot: snapshot}, nil)
}

// Stash lists the stashes of the site's master copy.
func (c *Client) Stash(ctx context.Context, site string) (*StashList, error) {
	var out StashList
	if err := c.do(ctx, http.MethodGet, sitePath(site, "stash"), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RestoreStash asks the site's master to restore one of its stashes.
func (c *Client) RestoreStash(ctx context.Context, site, stash string) error {
	return c.do(ctx, http.MethodPost, sitePath(site, "stash", url.PathEscape(stash), "restore"), nil, nil)
}

// Nodes lists every member of the cluster.
func (c *Client) Nodes(ctx context.Context) ([]Node, error) {
	var out NodeList
	err := c.do(ctx, http.MethodGet, "/v1/nodes", nil, &out)
	return out.Nodes, err
}

// Drain asks a node to hand all its sites to others.
func (c *Client) Drain(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(node)+"/drain", nil, nil)
}

// Remove takes a node that is down out of the cluster for good.
func (c *Client) Remove(ctx context.Context, node string) error {
	return c.do(ctx, http.MethodPost, "/v1/nodes/"+url.PathEscape(node)+"/remove", nil, nil)
}

// Health asks the node whether it is up (no token needed).
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var out Health
	if err := c.do(ctx, http.MethodGet, "/v1/health", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Stats returns the node process's goroutines and memory.
func (c *Client) Stats(ctx context.Context) (*Stats, error) {
	var out Stats
	if err := c.do(ctx, http.MethodGet, "/v1/stats", nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// maxEventBytes bounds one server-sent event line.
const maxEventBytes = 1 << 20

// Events follows the event stream, calling fn for each event until ctx is
// done (it returns ctx's error), fn returns an error (it returns that), or
// the server ends the stream (it returns nil; the subscription was dropped,
// e.g. for reading too slowly, and a caller may subscribe again).
func (c *Client) Events(ctx context.Context, fn func(Event) error) error {
	req, err := c.newRequest(ctx, http.MethodGet, "/v1/events", nil)
	if err != nil {
		return err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readAPIError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventBytes)
	var typ string
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if len(data) > 0 {
				var ev Event
				if err := json.Unmarshal([]byte(strings.Join(data, "\n")), &ev); err != nil {
					return fmt.Errorf("event %q: %w", typ, err)
				}
				if ev.Type == "" {
					ev.Type = typ
				}
				if err := fn(ev); err != nil {
					return err
				}
			}
			typ, data = "", nil
		case strings.HasPrefix(line, ":"):
			// a comment (ping)
		default:
			field, value, _ := strings.Cut(line, ":")
			value = strings.TrimPrefix(value, " ")
			switch field {
			case "event":
				typ = value
			case "data":
				data = append(data, value)
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	return nil
}
