// Command hcdemoapp is a small site app for demos and end-to-end tests: the
// AppCommand of a site, run by runtime/sites.
//
// It listens on 127.0.0.1:$PORT and keeps its data in $HC_DATA_DIR/data/:
//
//	GET  /            a small HTML page: site, host, pid, writes stored, a form to post a note
//	POST /write?id=N  appends "N<TAB>unix_ms<TAB>len<TAB>base64(body)\n" to writes.log
//	                  (body at most 64 KiB, else 413) and answers "ok id=N" only
//	                  after fsync: an acknowledged write is on disk
//	GET  /writes      the stored ids, one per line, in order
//	GET  /health      "ok"
//	GET  /pid         the process id (tests kill it)
//	GET  /sleep?ms=N  answers after N ms (at most 10 minutes; tests hold a request in flight)
//	GET  /static/...  files under $HC_WEB_ROOT
//
// SIGTERM or SIGINT shuts the server down gracefully, waiting at most 3 s for
// requests in flight.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const (
	// writeBodyMax bounds a write's body; beyond it the write is refused
	// with 413 and nothing is stored.
	writeBodyMax = 64 << 10
	// sleepMax bounds GET /sleep; a longer ms is cut to it.
	sleepMax = 10 * time.Minute
	// shutdownWaitMax bounds the graceful shutdown on SIGTERM; requests
	// still running then are cut.
	shutdownWaitMax = 3 * time.Second
	// headerWaitMax bounds how long a client may take to send its headers.
	headerWaitMax = 10 * time.Second
)

// ids are what /write accepts as id: a number or a short token, nothing that
// could break the tab-separated log.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

func main() {
	log.SetFlags(0)
	log.SetPrefix("hcdemoapp: ")
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

func run() error {
	port := os.Getenv("PORT")
	dataDir := os.Getenv("HC_DATA_DIR")
	if port == "" || dataDir == "" {
		return errors.New("PORT and HC_DATA_DIR must be set")
	}
	st, err := openStore(filepath.Join(dataDir, "data"))
	if err != nil {
		return err
	}
	defer st.close()

	app := &app{
		site:  os.Getenv("HC_SITE"),
		store: st,
	}
	app.host, _ = os.Hostname()
	if webRoot := os.Getenv("HC_WEB_ROOT"); webRoot != "" {
		if root, err := os.OpenRoot(webRoot); err == nil {
			defer root.Close()
			app.static = http.StripPrefix("/static/", http.FileServerFS(root.FS()))
		}
	}

	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: app.routes(), ReadHeaderTimeout: headerWaitMax}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	log.Printf("site %q listening on %s, %d writes stored", app.site, l.Addr(), st.count())

	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	log.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownWaitMax)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Printf("shutdown: %v; closing", err)
		srv.Close()
	}
	return nil
}

type app struct {
	site, host string
	store      *store
	static     http.Handler // nil: no web root
}

func (a *app) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.index)
	mux.HandleFunc("POST /write", a.write)
	mux.HandleFunc("GET /writes", a.writes)
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /pid", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%d\n", os.Getpid()) })
	mux.HandleFunc("GET /sleep", sleep)
	mux.HandleFunc("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		if a.static == nil {
			http.NotFound(w, r)
			return
		}
		a.static.ServeHTTP(w, r)
	})
	return mux
}

var indexPage = template.Must(template.New("index").Parse(`<!doctype html>
<meta charset="utf-8">
<title>{{.Site}}</title>
<h1>{{.Site}}</h1>
<p>Served by hcdemoapp on {{.Host}}, pid {{.Pid}}. Writes stored: {{.Writes}}.</p>
<form method="post" action="/write?id={{.NextID}}">
<textarea name="note" rows="3" cols="40"></textarea><br>
<button>Store note</button>
</form>
<p><a href="/writes">stored ids</a></p>
`))

func (a *app) index(w http.ResponseWriter, r *http.Request) {
	n := a.store.count()
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	indexPage.Execute(w, map[string]any{
		"Site": a.site, "Host": a.host, "Pid": os.Getpid(), "Writes": n,
		"NextID": fmt.Sprintf("note-%d", time.Now().UnixMilli()),
	})
}

func (a *app) write(w http.ResponseWriter, r *http.Request) {
	id := r.URL.Query().Get("id")
	if !idPattern.MatchString(id) {
		http.Error(w, "400 bad request: id must be 1-64 characters of A-Z a-z 0-9 . _ -", http.StatusBadRequest)
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, writeBodyMax))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			http.Error(w, fmt.Sprintf("413 request entity too large: at most %d bytes", writeBodyMax), http.StatusRequestEntityTooLarge)
			return
		}
		http.Error(w, "400 bad request: "+err.Error(), http.StatusBadRequest)
		return
	}
	if err := a.store.append(id, body); err != nil {
		log.Printf("write %s: %v", id, err)
		http.Error(w, "500 write not stored", http.StatusInternalServerError)
		return
	}
	fmt.Fprintf(w, "ok id=%s\n", id)
}

func (a *app) writes(w http.ResponseWriter, r *http.Request) {
	ids, err := a.store.ids()
	if err != nil {
		http.Error(w, "500 "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	for _, id := range ids {
		io.WriteString(w, id+"\n")
	}
}

func sleep(w http.ResponseWriter, r *http.Request) {
	ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
	if err != nil || ms < 0 {
		http.Error(w, "400 bad request: ms must be a non-negative integer", http.StatusBadRequest)
		return
	}
	d := min(time.Duration(ms)*time.Millisecond, sleepMax)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		fmt.Fprintf(w, "slept %d ms\n", d.Milliseconds())
	case <-r.Context().Done():
	}
}

// store is the append-only writes log. One mutex orders appends and reads,
// so readers never see half a line.
type store struct {
	mu     sync.Mutex
	f      *os.File
	path   string
	size   int64 // bytes of complete lines
	writes int
}

// openStore opens (creating) dir/writes.log. A last line without its
// newline is the remains of a write cut by a crash, never acknowledged: it
// is cut off so that the next write starts on a line of its own.
func openStore(dir string) (*store, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	path := filepath.Join(dir, "writes.log")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		f.Close()
		return nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		f.Close()
		return nil, err
	}
	if end := bytes.LastIndexByte(data, '\n') + 1; end < len(data) {
		log.Printf("cutting %d bytes of an unfinished last line off %s", len(data)-end, path)
		if err := f.Truncate(int64(end)); err != nil {
			f.Close()
			return nil, err
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, err
		}
		data = data[:end]
	}
	return &store{f: f, path: path, size: int64(len(data)), writes: bytes.Count(data, []byte{'\n'})}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (s *store) append(id string, body []byte) error {
	line := fmt.Sprintf("%s\t%d\t%d\t%s\n", id, time.Now().UnixMilli(), len(body), base64.StdEncoding.EncodeToString(body))
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.f.Write([]byte(line))
	if err == nil {
		err = s.f.Sync()
	}
	if err != nil {
		// Not acknowledged: take back whatever part of the line got in, so
		// the next write starts on a line of its own.
		if terr := s.f.Truncate(s.size); terr != nil {
			return fmt.Errorf("%w (and truncating back: %v)", err, terr)
		}
		return err
	}
	s.size += int64(len(line))
	s.writes++
	return nil
}

func (s *store) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.writes
}

func (s *store) ids() ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.Open(s.path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var ids []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 2*writeBodyMax) // base64 of the largest body fits
	for sc.Scan() {
		id, _, _ := bytes.Cut(sc.Bytes(), []byte{'\t'})
		ids = append(ids, string(id))
	}
	return ids, sc.Err()
}

func (s *store) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.f.Close()
}
