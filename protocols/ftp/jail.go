package ftp

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"strings"
	"syscall"
	"time"

	ftpserver "github.com/fclairamb/ftpserverlib"
)

// dirEntriesMax bounds one directory listing. A larger directory is
// refused with a clear error rather than held in memory whole (and sent
// over the node-to-node channel whole).
const dirEntriesMax = 100_000

// webDir is the directory of a dataset that FTP users see as "/": the
// site's web root, as runtime/sites serves it.
const webDir = "web"

// Errors an FTP client may see. They carry no host path: every path in
// them is the one the client gave, relative to its site.
var (
	// errEscape: the path (through a symlink, usually) leads out of the
	// site's web root. Logged with the session's site and user.
	errEscape = errors.New("path leaves the site")
	// errQuota: the dataset's quota (or the pool) is full.
	errQuota = fmt.Errorf("%w: the site's quota is full", ftpserver.ErrStorageExceeded)
	// errNotServing: this node does not serve the site now (it moved, is
	// paused or is starting); the caller asks the routes again.
	errNotServing = errors.New("site is not served here now")
	// errFailed hides an unexpected error's text (which may name host
	// paths) from the client; the full error is logged.
	errFailed = errors.New("operation failed")
	// errIsDir and errNotDir: the wrong kind of file for the command.
	errIsDir  = errors.New("is a directory")
	errNotDir = errors.New("not a directory")
	// errNotEmpty: RMD of a directory that has entries.
	errNotEmpty = errors.New("directory not empty")
	// errTooLarge: a listing past dirEntriesMax.
	errTooLarge = fmt.Errorf("directory has more than %d entries", dirEntriesMax)
	// errRoot: the command would remove or rename the site's root.
	errRoot = errors.New("the site's root cannot be changed")
	// errMoving: an upload met the pause of a move (or its site stopped
	// being served here): it is cut before the move's final snapshot, so no
	// byte is acknowledged that the new master lacks; the client resumes.
	errMoving = errors.New("the site is moving: transfer interrupted, resume it")
	// errUnsupported: commands the jail does not offer (chmod, chown).
	errUnsupported = errors.New("not supported")
)

// fileInfo is a file's metadata as the FTP library and the node-to-node
// channel see it.
type fileInfo struct {
	N string      `json:"n"`
	S int64       `json:"s"`
	M fs.FileMode `json:"m"`
	T time.Time   `json:"t"`
}

func (f *fileInfo) Name() string       { return f.N }
func (f *fileInfo) Size() int64        { return f.S }
func (f *fileInfo) Mode() fs.FileMode  { return f.M }
func (f *fileInfo) ModTime() time.Time { return f.T }
func (f *fileInfo) IsDir() bool        { return f.M.IsDir() }
func (f *fileInfo) Sys() any           { return nil }

func infoOf(fi fs.FileInfo) *fileInfo {
	return &fileInfo{N: fi.Name(), S: fi.Size(), M: fi.Mode() & (fs.ModeType | fs.ModePerm), T: fi.ModTime()}
}

// siteFS is what an FTP session does to its site's files. Paths are the
// client's: absolute, slash-separated, relative to the site's web root
// ("/" is the root). The master implements it on the dataset (jail);
// other nodes implement it over the node-to-node channel (remoteFS).
type siteFS interface {
	Stat(name string) (*fileInfo, error)
	ReadDir(name string) ([]*fileInfo, error)
	Mkdir(name string) error
	Remove(name string) error
	RemoveDir(name string) error
	RemoveAll(name string) error
	Rename(from, to string) error
	Chtimes(name string, mtime time.Time) error
	// OpenRead opens a regular file for reading from offset.
	OpenRead(name string, offset int64) (io.ReadCloser, error)
	// OpenWrite opens a regular file for writing with the FTP library's
	// flags (O_CREATE, O_TRUNC, O_APPEND) at offset (a REST resume). Close
	// reports whether every byte reached the file.
	OpenWrite(name string, flags int, offset int64) (io.WriteCloser, error)
}

// relPath turns a client path into one relative to the root ("." for the
// root itself). path.Clean of a rooted path leaves no ".." element; the
// os.Root lookup then refuses symlinks out of the root.
func relPath(name string) (string, error) {
	if strings.IndexByte(name, 0) >= 0 {
		return "", &fs.PathError{Op: "lookup", Path: name, Err: fs.ErrInvalid}
	}
	p := strings.TrimPrefix(path.Clean("/"+name), "/")
	if p == "" {
		return ".", nil
	}
	return p, nil
}

// clientPath is how name is shown back to the client.
func clientPath(name string) string { return path.Clean("/" + name) }

// jail is one site's web root on its master, behind an os.Root: every path
// component is resolved without following a symlink out of the root
// (kernel-level lookups, not string checks).
type jail struct {
	root *os.Root
	site string
	log  *slog.Logger
	// quota reports, when the site has a quota, the bytes that can still be
	// written (read at each upload's open); nil means none. The kernel
	// enforces a ZFS quota by itself; this also enforces it on drivers
	// that do not.
	quota func() (int64, bool)
	// serving, when set, reports whether this node still serves the site
	// at the epoch the work was admitted at; an upload checks it before
	// each write and stops with errMoving when not.
	serving func() bool
	// touch, when set, tells the host the site changes (an upload in
	// progress), at most every touchEvery: the host skips looking for
	// changes in a site that had no admitted work since its last look.
	touch func()
}

// touchEvery bounds how often an upload tells the host that its site
// changes (so that the next snapshot looks at it).
const touchEvery = 500 * time.Millisecond

var _ siteFS = (*jail)(nil)

// openJail opens dir/web (creating it when missing) as the root of site.
// The web directory is looked up inside dir's own root, so a "web" that
// is a symlink out of the dataset is refused too.
func openJail(dir, site string, log *slog.Logger) (*jail, error) {
	ds, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("site %s: open dataset: %w", site, err)
	}
	defer ds.Close()
	if err := ds.Mkdir(webDir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("site %s: make web root: %w", site, err)
	}
	root, err := ds.OpenRoot(webDir)
	if err != nil {
		return nil, fmt.Errorf("site %s: open web root: %w", site, err)
	}
	return &jail{root: root, site: site, log: log}, nil
}

func (j *jail) Close() error { return j.root.Close() }

// fail turns an error of the os.Root into what the client may see: the
// client's path and a cause without host paths. Escapes are logged.
func (j *jail) fail(op, name string, err error) error {
	if err == nil {
		return nil
	}
	shown := clientPath(name)
	var cause error
	var errno syscall.Errno
	switch {
	case errors.Is(err, errEscape), isEscape(err):
		j.log.Warn("ftp: path escape refused", "site", j.site, "op", op, "path", shown)
		cause = errEscape
	case errors.Is(err, errQuota), errors.Is(err, syscall.EDQUOT), errors.Is(err, syscall.ENOSPC),
		errors.Is(err, ftpserver.ErrStorageExceeded):
		cause = errQuota
	case errors.Is(err, errMoving):
		cause = errMoving
	case errors.Is(err, fs.ErrNotExist):
		cause = fs.ErrNotExist
	case errors.Is(err, fs.ErrExist):
		cause = fs.ErrExist
	case errors.Is(err, fs.ErrPermission):
		cause = fs.ErrPermission
	case errors.Is(err, errIsDir), errors.Is(err, syscall.EISDIR):
		cause = errIsDir
	case errors.Is(err, errNotDir), errors.Is(err, syscall.ENOTDIR):
		cause = errNotDir
	case errors.Is(err, errNotEmpty), errors.Is(err, syscall.ENOTEMPTY), errors.Is(err, syscall.EEXIST):
		cause = errNotEmpty
	case errors.Is(err, errTooLarge), errors.Is(err, errRoot), errors.Is(err, errUnsupported), errors.Is(err, fs.ErrInvalid):
		for _, e := range []error{errTooLarge, errRoot, errUnsupported, fs.ErrInvalid} {
			if errors.Is(err, e) {
				cause = e
			}
		}
	case errors.As(err, &errno) && errno == syscall.ELOOP:
		cause = errors.New("too many levels of symbolic links")
	default:
		j.log.Warn("ftp: file operation failed", "site", j.site, "op", op, "path", shown, "err", err)
		cause = errFailed
	}
	return &fs.PathError{Op: op, Path: shown, Err: cause}
}

// isEscape recognises os.Root's refusal to leave the root: its error is
// unexported ("path escapes from parent"), and a lookup through an
// absolute symlink says the same.
func isEscape(err error) bool {
	return err != nil && strings.Contains(err.Error(), "path escapes from parent")
}

func (j *jail) Stat(name string) (*fileInfo, error) {
	rel, err := relPath(name)
	if err != nil {
		return nil, j.fail("stat", name, err)
	}
	fi, err := j.root.Stat(rel)
	if err != nil {
		return nil, j.fail("stat", name, err)
	}
	out := infoOf(fi)
	if rel == "." {
		out.N = "/"
	}
	return out, nil
}

// ReadDir lists a directory. A symlink is listed as what it points to when
// that is inside the root, and left out when it leads out of it (or
// nowhere): the client cannot use it anyway.
func (j *jail) ReadDir(name string) ([]*fileInfo, error) {
	rel, err := relPath(name)
	if err != nil {
		return nil, j.fail("list", name, err)
	}
	f, err := j.root.Open(rel)
	if err != nil {
		return nil, j.fail("list", name, err)
	}
	defer f.Close()
	fis, err := f.Readdir(dirEntriesMax + 1)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, j.fail("list", name, err)
	}
	if len(fis) > dirEntriesMax {
		return nil, j.fail("list", name, errTooLarge)
	}
	out := make([]*fileInfo, 0, len(fis))
	for _, fi := range fis {
		if fi.Mode()&fs.ModeSymlink != 0 {
			target, err := j.root.Stat(path.Join(rel, fi.Name()))
			if err != nil {
				if isEscape(err) {
					j.log.Info("ftp: symlink out of the site left out of a listing", "site", j.site,
						"path", clientPath(path.Join(name, fi.Name())))
				}
				continue
			}
			info := infoOf(target)
			info.N = fi.Name()
			out = append(out, info)
			continue
		}
		out = append(out, infoOf(fi))
	}
	return out, nil
}

func (j *jail) Mkdir(name string) error {
	rel, err := relPath(name)
	if err != nil {
		return j.fail("mkdir", name, err)
	}
	return j.fail("mkdir", name, j.root.Mkdir(rel, 0o755))
}

// Remove deletes a file (or a symlink itself, never its target).
func (j *jail) Remove(name string) error {
	rel, err := relPath(name)
	if err != nil || rel == "." {
		return j.fail("delete", name, errors.Join(err, errRoot))
	}
	fi, err := j.root.Lstat(rel)
	if err != nil {
		return j.fail("delete", name, err)
	}
	if fi.IsDir() {
		return j.fail("delete", name, errIsDir)
	}
	return j.fail("delete", name, j.root.Remove(rel))
}

// RemoveDir deletes an empty directory.
func (j *jail) RemoveDir(name string) error {
	rel, err := relPath(name)
	if err != nil || rel == "." {
		return j.fail("rmdir", name, errors.Join(err, errRoot))
	}
	fi, err := j.root.Lstat(rel)
	if err != nil {
		return j.fail("rmdir", name, err)
	}
	if !fi.IsDir() {
		return j.fail("rmdir", name, errNotDir)
	}
	return j.fail("rmdir", name, j.root.Remove(rel))
}

// RemoveAll deletes a tree (os.Root's RemoveAll does not follow symlinks).
func (j *jail) RemoveAll(name string) error {
	rel, err := relPath(name)
	if err != nil || rel == "." {
		return j.fail("rmdir", name, errors.Join(err, errRoot))
	}
	return j.fail("rmdir", name, j.root.RemoveAll(rel))
}

func (j *jail) Rename(from, to string) error {
	relFrom, err1 := relPath(from)
	relTo, err2 := relPath(to)
	if err := errors.Join(err1, err2); err != nil {
		return j.fail("rename", from, err)
	}
	if relFrom == "." || relTo == "." {
		return j.fail("rename", from, errRoot)
	}
	if err := j.root.Rename(relFrom, relTo); err != nil {
		if isEscape(err) {
			// Say which side escaped: probe the destination's parent.
			if _, perr := j.root.Stat(path.Dir(relTo)); isEscape(perr) {
				return j.fail("rename", to, err)
			}
		}
		return j.fail("rename", from, err)
	}
	return nil
}

func (j *jail) Chtimes(name string, mtime time.Time) error {
	rel, err := relPath(name)
	if err != nil {
		return j.fail("mfmt", name, err)
	}
	return j.fail("mfmt", name, j.root.Chtimes(rel, mtime, mtime))
}

func (j *jail) OpenRead(name string, offset int64) (io.ReadCloser, error) {
	rel, err := relPath(name)
	if err != nil {
		return nil, j.fail("open", name, err)
	}
	f, err := j.root.OpenFile(rel, os.O_RDONLY, 0)
	if err != nil {
		return nil, j.fail("open", name, err)
	}
	fi, err := f.Stat()
	if err == nil && fi.IsDir() {
		err = errIsDir
	}
	if err == nil && offset > 0 {
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, j.fail("open", name, err)
	}
	return &jailReader{f: f, j: j, name: name, left: fi.Size() - offset}, nil
}

// writeFlags keeps the flags an upload may use.
const writeFlags = os.O_CREATE | os.O_TRUNC | os.O_APPEND

func (j *jail) OpenWrite(name string, flags int, offset int64) (io.WriteCloser, error) {
	rel, err := relPath(name)
	if err != nil {
		return nil, j.fail("open", name, err)
	}
	if rel == "." {
		return nil, j.fail("open", name, errIsDir)
	}
	left, limited := int64(0), false
	if j.quota != nil {
		left, limited = j.quota()
		if limited && left <= 0 {
			return nil, j.fail("open", name, errQuota)
		}
	}
	f, err := j.root.OpenFile(rel, os.O_WRONLY|flags&writeFlags, 0o644)
	if err != nil {
		return nil, j.fail("open", name, err)
	}
	fi, err := f.Stat()
	if err == nil && !fi.Mode().IsRegular() {
		err = errIsDir
	}
	if err == nil && offset > 0 && flags&os.O_APPEND == 0 {
		_, err = f.Seek(offset, io.SeekStart)
	}
	if err != nil {
		f.Close()
		return nil, j.fail("open", name, err)
	}
	return &jailWriter{f: f, j: j, name: name, left: left, limited: limited}, nil
}

type jailReader struct {
	f    *os.File
	j    *jail
	name string
	left int64 // bytes from the offset to the end when opened
}

// Remaining is what the download will send (unless the file changes): the
// channel sends it as Content-Length, which lets the master use sendfile
// and spares the other side de-chunking.
func (r *jailReader) Remaining() int64 { return max(0, r.left) }

// Read and WriteTo send the file as it was when opened: up to its size
// then (the channel announced that size).
func (r *jailReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.f.Read(p)
	r.left -= int64(n)
	if err != nil && !errors.Is(err, io.EOF) {
		err = r.j.fail("read", r.name, err)
	}
	return n, err
}

// WriteTo lets io.Copy hand the file to the kernel (sendfile) when the
// destination is a socket.
func (r *jailReader) WriteTo(w io.Writer) (int64, error) {
	n, err := io.Copy(w, &io.LimitedReader{R: r.f, N: max(0, r.left)})
	r.left -= n
	if err != nil {
		err = r.j.fail("read", r.name, err)
	}
	return n, err
}

func (r *jailReader) Close() error { return r.f.Close() }

type jailWriter struct {
	f       *os.File
	j       *jail
	name    string
	left    int64
	limited bool
	err     error
	touched time.Time
}

func (w *jailWriter) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.j.serving != nil && !w.j.serving() {
		w.err = w.j.fail("write", w.name, errMoving)
		return 0, w.err
	}
	if w.limited && int64(len(p)) > w.left {
		w.err = w.j.fail("write", w.name, errQuota)
		return 0, w.err
	}
	if w.j.touch != nil {
		if now := time.Now(); now.Sub(w.touched) >= touchEvery {
			w.touched = now
			w.j.touch()
		}
	}
	n, err := w.f.Write(p)
	w.left -= int64(n)
	if err != nil {
		w.err = w.j.fail("write", w.name, err)
	}
	return n, w.err
}

// ReadFrom keeps large copies in large writes.
func (w *jailWriter) ReadFrom(r io.Reader) (int64, error) {
	buf := make([]byte, copyBufferBytes)
	return io.CopyBuffer(writerOnly{w}, r, buf)
}

// writerOnly hides ReadFrom, so io.CopyBuffer does not call it again.
type writerOnly struct{ io.Writer }

func (w *jailWriter) Close() error {
	err := w.f.Close()
	if w.err != nil {
		return w.err
	}
	return w.j.fail("close", w.name, err)
}

// copyBufferBytes is the buffer of one transfer's copy loop (an upload to
// the dataset, a stream over the node-to-node channel).
const copyBufferBytes = 256 << 10
