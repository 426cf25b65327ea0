package ftp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/host"
)

// The node-to-node channel: a non-master node's sessions reach the site's
// files through this endpoint on the master's internal port (registered
// with Host.HandleInternal, so every request carries the node token). One
// HTTP request per file operation; reads and writes stream their bodies.
const (
	// internalPath is the endpoint's prefix; the operation follows it.
	internalPath = host.InternalPrefix + "ftp/"
	// headerError names the kind of a failed operation (see errorKinds).
	headerError = "X-Hc-Ftp-Error"
	// headerPath is the client path a failed operation names.
	headerPath = "X-Hc-Ftp-Path"
	// metaWaitMax bounds one metadata operation over the channel (stat,
	// list, mkdir, ...). At the bound the FTP command fails.
	metaWaitMax = 30 * time.Second
	// errorBodyBytesMax bounds the error text read from a failed answer.
	errorBodyBytesMax = 4 << 10
	// listBodyBytesMax bounds a listing's JSON (dirEntriesMax entries of
	// at most ~400 bytes).
	listBodyBytesMax = 64 << 20
)

// errorKinds maps what crosses the channel to the errors the client sees.
var errorKinds = map[string]error{
	"notexist": fs.ErrNotExist, "exist": fs.ErrExist, "permission": fs.ErrPermission,
	"escape": errEscape, "quota": errQuota, "isdir": errIsDir, "notdir": errNotDir,
	"notempty": errNotEmpty, "toolarge": errTooLarge, "root": errRoot, "unsupported": errUnsupported,
	"invalid": fs.ErrInvalid, "moving": errMoving, "notserving": errNotServing, "failed": errFailed, "auth": errAuth,
}

// errAuth: a login with a wrong user or password.
var errAuth = errors.New("login incorrect")

func kindOf(err error) string {
	for _, k := range []string{"notserving", "moving", "escape", "quota", "auth", "notexist", "exist", "permission", "isdir",
		"notdir", "notempty", "toolarge", "root", "unsupported", "invalid"} {
		if errors.Is(err, errorKinds[k]) {
			return k
		}
	}
	return "failed"
}

// writeError answers a failed operation: 421 when the site is not served
// here (the caller asks the routes again), 4xx/5xx otherwise, with the
// error's kind and client path in headers.
func writeError(w http.ResponseWriter, err error) {
	kind := kindOf(err)
	w.Header().Set(headerError, kind)
	var pe *fs.PathError
	if errors.As(err, &pe) {
		w.Header().Set(headerPath, url.PathEscape(pe.Path))
	}
	code := http.StatusConflict
	switch kind {
	case "notserving":
		code = http.StatusMisdirectedRequest
	case "notexist":
		code = http.StatusNotFound
	case "moving":
		code = http.StatusServiceUnavailable
	case "escape", "permission", "auth":
		code = http.StatusForbidden
	case "quota":
		code = http.StatusInsufficientStorage
	case "failed":
		code = http.StatusInternalServerError
	}
	w.WriteHeader(code)
	_, _ = io.WriteString(w, kind)
}

// readError rebuilds a failed answer's error for op.
func readError(op string, resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, errorBodyBytesMax))
	kind := resp.Header.Get(headerError)
	cause, ok := errorKinds[kind]
	if !ok {
		if resp.StatusCode == http.StatusMisdirectedRequest {
			cause = errNotServing
		} else {
			cause = fmt.Errorf("%w (master answered %s)", errFailed, resp.Status)
		}
	}
	if cause == errNotServing || cause == errAuth {
		return cause
	}
	p, _ := url.PathUnescape(resp.Header.Get(headerPath))
	if p == "" {
		p = "/"
	}
	return &fs.PathError{Op: op, Path: p, Err: cause}
}

// endpoint serves the channel on the master.
type endpoint struct{ s *Server }

func (e endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	op := strings.TrimPrefix(r.URL.Path, internalPath)
	q := r.URL.Query()
	site := q.Get("site")
	if !validSite(site) {
		http.Error(w, "bad site name", http.StatusBadRequest)
		return
	}
	if op == "auth" {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		if err := e.s.authLocal(r.Context(), site, r.PostFormValue("user"), r.PostFormValue("password")); err != nil {
			writeError(w, err)
		}
		return
	}
	fsys, release, err := e.s.local(r.Context(), site)
	if err != nil {
		writeError(w, err)
		return
	}
	defer release()
	name := q.Get("path")
	var result any
	switch op {
	case "stat":
		result, err = fsys.Stat(name)
	case "list":
		result, err = fsys.ReadDir(name)
	case "mkdir":
		err = fsys.Mkdir(name)
	case "remove":
		err = fsys.Remove(name)
	case "rmdir":
		err = fsys.RemoveDir(name)
	case "removeall":
		err = fsys.RemoveAll(name)
	case "rename":
		err = fsys.Rename(name, q.Get("to"))
	case "chtimes":
		var t time.Time
		if t, err = time.Parse(time.RFC3339Nano, q.Get("mtime")); err == nil {
			err = fsys.Chtimes(name, t)
		} else {
			err = fs.ErrInvalid
		}
	case "openw":
		// An upload's probe: open as the upload will (creating the file,
		// checking the quota), then close.
		var f io.WriteCloser
		offset, err1 := strconv.ParseInt(q.Get("offset"), 10, 64)
		flags, err2 := strconv.Atoi(q.Get("flags"))
		if err1 != nil || err2 != nil || offset < 0 {
			err = fs.ErrInvalid
		} else if f, err = fsys.OpenWrite(name, flags, offset); err == nil {
			err = f.Close()
		}
	case "read":
		e.read(w, fsys, name, q)
		return
	case "write":
		e.write(w, r, fsys, name, q)
		return
	default:
		http.Error(w, "unknown operation", http.StatusNotFound)
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(result)
}

func (e endpoint) read(w http.ResponseWriter, fsys siteFS, name string, q url.Values) {
	offset, err := strconv.ParseInt(q.Get("offset"), 10, 64)
	if err != nil || offset < 0 {
		writeError(w, fs.ErrInvalid)
		return
	}
	f, err := fsys.OpenRead(name, offset)
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	rem, sized := f.(interface{ Remaining() int64 })
	if sized {
		w.Header().Set("Content-Length", strconv.FormatInt(rem.Remaining(), 10))
	}
	w.WriteHeader(http.StatusOK)
	// An error mid-body cuts the response; the reader sees an unexpected
	// EOF. A file that grew since it was opened is sent up to its size then.
	_, _ = io.Copy(w, f)
}

func (e endpoint) write(w http.ResponseWriter, r *http.Request, fsys siteFS, name string, q url.Values) {
	offset, err1 := strconv.ParseInt(q.Get("offset"), 10, 64)
	flags, err2 := strconv.Atoi(q.Get("flags"))
	if err1 != nil || err2 != nil || offset < 0 {
		writeError(w, fs.ErrInvalid)
		return
	}
	f, err := fsys.OpenWrite(name, flags, offset)
	if err != nil {
		writeError(w, err)
		return
	}
	buf := make([]byte, copyBufferBytes)
	_, err = io.CopyBuffer(writerOnly{f}, r.Body, buf)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			// The body was cut (the client went away): nothing to tell it.
			err = &fs.PathError{Op: "write", Path: clientPath(name), Err: errFailed}
		}
		writeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// remoteFS is a site's files on another node (its master), for one
// session on this node.
type remoteFS struct {
	base   string // the master's internal URL
	site   string
	token  string
	client *http.Client
}

var _ siteFS = (*remoteFS)(nil)

func (r *remoteFS) url(op string, params ...string) string {
	q := url.Values{"site": {r.site}}
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	return r.base + internalPath + op + "?" + q.Encode()
}

func (r *remoteFS) do(ctx context.Context, method, u string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	req.Header.Set(host.HeaderToken, r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		// The master is unreachable (dead, or the route is stale): the
		// caller asks the routes again.
		return nil, fmt.Errorf("%w: %v", errNotServing, err)
	}
	return resp, nil
}

// meta runs one metadata operation and decodes its JSON answer into out.
func (r *remoteFS) meta(op, method, name string, out any, params ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), metaWaitMax)
	defer cancel()
	resp, err := r.do(ctx, method, r.url(op, append([]string{"path", name}, params...)...), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(op, resp)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, listBodyBytesMax)).Decode(out); err != nil {
		return &fs.PathError{Op: op, Path: clientPath(name), Err: fmt.Errorf("%w: bad answer from the master", errFailed)}
	}
	return nil
}

func (r *remoteFS) auth(ctx context.Context, user, password string) error {
	form := url.Values{"user": {user}, "password": {password}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url("auth"), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set(host.HeaderToken, r.token)
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", errNotServing, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError("login", resp)
	}
	return nil
}

func (r *remoteFS) Stat(name string) (*fileInfo, error) {
	var fi fileInfo
	if err := r.meta("stat", http.MethodGet, name, &fi); err != nil {
		return nil, err
	}
	return &fi, nil
}

func (r *remoteFS) ReadDir(name string) ([]*fileInfo, error) {
	var fis []*fileInfo
	if err := r.meta("list", http.MethodGet, name, &fis); err != nil {
		return nil, err
	}
	return fis, nil
}

func (r *remoteFS) Mkdir(name string) error     { return r.meta("mkdir", http.MethodPost, name, nil) }
func (r *remoteFS) Remove(name string) error    { return r.meta("remove", http.MethodPost, name, nil) }
func (r *remoteFS) RemoveDir(name string) error { return r.meta("rmdir", http.MethodPost, name, nil) }
func (r *remoteFS) RemoveAll(name string) error {
	return r.meta("removeall", http.MethodPost, name, nil)
}
func (r *remoteFS) Rename(from, to string) error {
	return r.meta("rename", http.MethodPost, from, nil, "to", to)
}
func (r *remoteFS) Chtimes(name string, mtime time.Time) error {
	return r.meta("chtimes", http.MethodPost, name, nil, "mtime", mtime.UTC().Format(time.RFC3339Nano))
}

// OpenRead starts the download at once, so that a missing file or a moved
// site is known before the library opens the data connection.
func (r *remoteFS) OpenRead(name string, offset int64) (io.ReadCloser, error) {
	ctx, cancel := context.WithCancel(context.Background())
	resp, err := r.do(ctx, http.MethodGet, r.url("read", "path", name, "offset", strconv.FormatInt(offset, 10)), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer cancel()
		defer resp.Body.Close()
		return nil, readError("open", resp)
	}
	return &remoteReader{body: resp.Body, cancel: cancel, name: name}, nil
}

type remoteReader struct {
	body   io.ReadCloser
	cancel context.CancelFunc
	name   string
}

func (r *remoteReader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		err = &fs.PathError{Op: "read", Path: clientPath(r.name), Err: fmt.Errorf("%w: the master's stream broke", errFailed)}
	}
	return n, err
}

func (r *remoteReader) Close() error {
	err := r.body.Close()
	r.cancel()
	return err
}

// OpenWrite returns the upload's handle; the request starts with the first
// byte (or at Close for an empty file). When the library hands it the data
// connection whole (ReadFrom), that connection is the request's body: no
// extra copy between goroutines.
func (r *remoteFS) OpenWrite(name string, flags int, offset int64) (io.WriteCloser, error) {
	ctx, cancel := context.WithCancel(context.Background())
	u := r.url("write", "path", name, "flags", strconv.Itoa(flags), "offset", strconv.FormatInt(offset, 10))
	return &remoteWriter{r: r, u: u, ctx: ctx, cancel: cancel, name: name}, nil
}

func errOr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

type remoteWriter struct {
	r      *remoteFS
	u      string
	ctx    context.Context
	cancel context.CancelFunc
	name   string

	started bool
	pw      *io.PipeWriter // piped mode (Write)
	done    chan struct{}  // piped mode: closed when the request ended
	err     error          // the request's outcome (set before done closes)
	once    sync.Once
}

// send runs the upload request with body and returns its outcome.
func (w *remoteWriter) send(body io.Reader) error {
	resp, err := w.r.do(w.ctx, http.MethodPut, w.u, body)
	if err == nil {
		if resp.StatusCode != http.StatusNoContent {
			err = readError("write", resp)
		}
		resp.Body.Close()
	}
	if err != nil && !errors.Is(err, errNotServing) {
		var pe *fs.PathError
		if !errors.As(err, &pe) {
			err = &fs.PathError{Op: "write", Path: clientPath(w.name), Err: fmt.Errorf("%w: %v", errFailed, err)}
		}
	}
	return err
}

// ReadFrom sends src as the upload's body (all of it, then the answer).
func (w *remoteWriter) ReadFrom(src io.Reader) (int64, error) {
	if w.started {
		return io.CopyBuffer(writerOnly{w}, src, make([]byte, copyBufferBytes))
	}
	w.started = true
	body := &countingReader{r: src}
	w.err = w.send(body)
	return body.n, w.err
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (w *remoteWriter) Write(p []byte) (int, error) {
	if !w.started {
		w.started = true
		pr, pw := io.Pipe()
		w.pw, w.done = pw, make(chan struct{})
		go func() {
			defer close(w.done)
			w.err = w.send(pr)
			// A Write still blocked on the pipe learns why the upload ended.
			_ = pr.CloseWithError(errOr(w.err, io.ErrClosedPipe))
		}()
	}
	if w.pw == nil {
		return 0, errOr(w.err, io.ErrClosedPipe)
	}
	n, err := w.pw.Write(p)
	if err != nil {
		<-w.done
		return n, errOr(w.err, err)
	}
	return n, nil
}

// Close ends the body and waits for the master's answer (an upload of no
// bytes is sent here, so that the file is created or truncated).
func (w *remoteWriter) Close() error {
	defer w.cancel()
	if !w.started {
		w.started = true
		w.err = w.send(http.NoBody)
		return w.err
	}
	if w.pw != nil {
		w.once.Do(func() { _ = w.pw.Close() })
		<-w.done
	}
	return w.err
}

// abort ends an upload that failed on the client's side: the master sees
// a cut body and keeps what arrived (as a local upload would).
func (w *remoteWriter) abort(err error) {
	if w.pw != nil {
		w.once.Do(func() { _ = w.pw.CloseWithError(err) })
	}
	w.cancel()
}
