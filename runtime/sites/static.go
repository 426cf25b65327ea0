package sites

import (
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"path"
	"strings"
)

// serveStatic serves a static site's files from its web root. The root is
// an os.Root: `..`, absolute symlinks and symlinks leading out of dir/web
// are refused by the kernel-level lookup, not by string checks, and answer
// 403. Directories are served by their index.html; there are no directory
// listings (a directory without index.html is 404).
func (s *Supervisor) serveStatic(st *siteState, w http.ResponseWriter, r *http.Request) {
	st.mu.Lock()
	root, dir, started := st.root, st.dir, st.started
	st.mu.Unlock()
	if root == nil && started {
		// dir/web may have appeared since Start.
		if root = s.openWebRoot(st.name, dir); root != nil {
			st.mu.Lock()
			if st.root == nil && st.started && st.dir == dir && st.command == "" {
				st.root = root
			} else {
				root.Close()
				root = st.root
			}
			st.mu.Unlock()
		}
	}
	if root == nil {
		http.Error(w, "404 not found: this site has no web root", http.StatusNotFound)
		return
	}

	upath := r.URL.Path
	if !strings.HasPrefix(upath, "/") {
		upath = "/" + upath
	}
	if hasDotDot(upath) {
		http.Error(w, "403 forbidden: path leaves the web root", http.StatusForbidden)
		return
	}
	fsys := webFS{fsys: root.FS(), log: s.log, site: st.name}
	name := strings.TrimPrefix(path.Clean(upath), "/")
	if name == "" {
		name = "."
	}
	if fi, err := fs.Stat(fsys, name); err == nil && fi.IsDir() {
		if _, err := fs.Stat(fsys, path.Join(name, "index.html")); err != nil {
			http.Error(w, "404 not found: no index.html in this directory", http.StatusNotFound)
			return
		}
	}
	http.FileServerFS(fsys).ServeHTTP(w, r)
}

// hasDotDot reports whether a URL path has a ".." element (as net/http's
// FileServer checks it, which would answer 400).
func hasDotDot(p string) bool {
	if !strings.Contains(p, "..") {
		return false
	}
	for _, elem := range strings.FieldsFunc(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if elem == ".." {
			return true
		}
	}
	return false
}

// webFS is a web root as http.FileServerFS sees it: every error other than
// "does not exist" becomes "permission denied" (403), because os.Root's
// refusal to leave the root (a symlink out of it) is an unexported error
// that FileServer would answer with 500; and directories list nothing.
type webFS struct {
	fsys fs.FS
	log  *slog.Logger
	site string
}

func (w webFS) Open(name string) (fs.File, error) {
	f, err := w.fsys.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, err
		}
		w.log.Debug("static file refused", "site", w.site, "path", name, "err", err)
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "stat", Path: name, Err: fs.ErrPermission}
	}
	if fi.IsDir() {
		return unlistedDir{f}, nil
	}
	return f, nil
}

// unlistedDir is a directory whose listing is empty: serveStatic refuses
// directories without index.html before FileServer would list them, and
// this keeps a race with a deleted index.html from listing anything.
type unlistedDir struct{ fs.File }

func (unlistedDir) ReadDir(n int) ([]fs.DirEntry, error) {
	if n > 0 {
		return nil, io.EOF
	}
	return nil, nil
}

var _ fs.ReadDirFile = unlistedDir{}
