package portable

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// blockBytes is the unit of change detection inside a file: an incremental
// stream carries only the blocks whose hash differs (as ZFS sends records of
// its recordsize, 128 KiB by default).
const blockBytes = 128 << 10

const hashBytes = sha256.Size

type entryKind string

const (
	kindFile    entryKind = "f"
	kindDir     entryKind = "d"
	kindSymlink entryKind = "l"
)

// entry is one file system object in a snapshot.
type entry struct {
	Path    string      `json:"p"` // slash-separated, relative to the tree root
	Kind    entryKind   `json:"k"`
	Mode    fs.FileMode `json:"m"` // permission bits
	Size    int64       `json:"s,omitempty"`
	MtimeNs int64       `json:"t"`
	Target  string      `json:"l,omitempty"`
	Hashes  []byte      `json:"h,omitempty"` // sha256 per blockBytes block, concatenated
	// Identity of the live file this entry was copied from, so the next
	// snapshot can hard-link unchanged files instead of copying them. ctime
	// changes on every write and cannot be set by users.
	LiveIno     uint64 `json:"i,omitempty"`
	LiveCtimeNs int64  `json:"c,omitempty"`
}

// manifest describes one snapshot; it lives beside the snapshot's tree.
type manifest struct {
	Name    string    `json:"name"`
	GUID    uint64    `json:"guid"`
	Created time.Time `json:"created"`
	Seq     uint64    `json:"seq"` // local order of snapshots
	Entries []entry   `json:"entries"`
}

func (m *manifest) byPath() map[string]*entry {
	out := make(map[string]*entry, len(m.Entries))
	for i := range m.Entries {
		out[m.Entries[i].Path] = &m.Entries[i]
	}
	return out
}

func (m *manifest) size() int64 {
	var n int64
	for _, e := range m.Entries {
		n += e.Size
	}
	return n
}

func readManifest(path string) (*manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var m manifest
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return &m, nil
}

// writeFileAtomic writes via a temporary file and rename.
func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func writeJSONAtomic(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

// identityRacyMargin (nanoseconds): a file whose ctime is this close to
// (or after) the moment its identity is recorded may still be written
// within the same clock tick without its ctime changing (Linux stamps
// files from a coarse clock), so its identity is not recorded and the next
// snapshot copies it again rather than trust it (git's "racy" index
// entries). It must exceed the file system's timestamp granularity:
// fineRacyMargin covers Linux's tick (at most 10 ms) on file systems with
// nanosecond stamps (ext4, xfs, btrfs, tmpfs); New raises it to
// coarseRacyMargin when its directory's stamps turn out to be whole
// seconds. It is kept short because a racy file is copied whole again: a
// large file changed just before a move's pre-copy would otherwise be
// copied again inside the pause.
var identityRacyMargin atomic.Int64

const (
	fineRacyMargin   = 50 * time.Millisecond
	coarseRacyMargin = 2 * time.Second
)

func init() { identityRacyMargin.Store(int64(fineRacyMargin)) }

// probeTimestampGranularity raises identityRacyMargin to coarseRacyMargin
// if files written in dir get whole-second ctimes.
func probeTimestampGranularity(dir string) error {
	probe := filepath.Join(dir, ".timestamp-probe")
	defer os.Remove(probe)
	whole := 0
	for i := 0; i < 3; i++ {
		if err := os.WriteFile(probe, []byte{byte(i)}, 0o600); err != nil {
			return err
		}
		fi, err := os.Lstat(probe)
		if err != nil {
			return err
		}
		if _, ctimeNs := statIdentity(fi); ctimeNs%int64(time.Second) == 0 {
			whole++
		}
		time.Sleep(3 * time.Millisecond)
	}
	if whole == 3 {
		for {
			cur := identityRacyMargin.Load()
			if cur >= int64(coarseRacyMargin) || identityRacyMargin.CompareAndSwap(cur, int64(coarseRacyMargin)) {
				return nil
			}
		}
	}
	return nil
}

// trustedIdentity is statIdentity, or zeros (untrusted: copy it next
// time) for a file changed within identityRacyMargin of recordedAt.
func trustedIdentity(fi fs.FileInfo, recordedAt time.Time) (ino uint64, ctimeNs int64) {
	ino, ctimeNs = statIdentity(fi)
	if ctimeNs >= recordedAt.UnixNano()-identityRacyMargin.Load() {
		return 0, 0
	}
	return ino, ctimeNs
}

func statIdentity(fi fs.FileInfo) (ino uint64, ctimeNs int64) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino, st.Ctim.Sec*1e9 + st.Ctim.Nsec
	}
	return 0, 0
}

// hashingCopy copies src to dst and returns the block hashes.
func hashingCopy(dst io.Writer, src io.Reader) (int64, []byte, error) {
	buf := make([]byte, blockBytes)
	var hashes []byte
	var total int64
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			sum := sha256.Sum256(buf[:n])
			hashes = append(hashes, sum[:]...)
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return total, nil, werr
			}
			total += int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return total, hashes, nil
		}
		if err != nil {
			return total, nil, err
		}
	}
}

// captureTree copies the live tree at src into dst (which must not exist)
// and returns its entries. Files unchanged since prev (same inode, ctime,
// size, mtime) are hard-linked from prevTree instead of copied. Snapshot
// files are made read-only; they are never written again.
func captureTree(src, dst string, prev *manifest, prevTree string) ([]entry, int64, error) {
	var prevBy map[string]*entry
	if prev != nil {
		prevBy = prev.byPath()
	}
	if err := os.Mkdir(dst, 0o755); err != nil {
		return nil, 0, err
	}
	var entries []entry
	var copied int64
	started := time.Now()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(path)
		if err != nil {
			return err
		}
		out := filepath.Join(dst, filepath.FromSlash(rel))
		e := entry{Path: rel, Mode: fi.Mode().Perm(), MtimeNs: fi.ModTime().UnixNano()}
		switch {
		case fi.IsDir():
			e.Kind = kindDir
			if err := os.Mkdir(out, 0o755); err != nil {
				return err
			}
		case fi.Mode()&fs.ModeSymlink != 0:
			e.Kind = kindSymlink
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			e.Target = target
			if err := os.Symlink(target, out); err != nil {
				return err
			}
		case fi.Mode().IsRegular():
			e.Kind = kindFile
			e.Size = fi.Size()
			// The previous entry's identity was recorded only if it was
			// not racy then, so a match means no write since.
			ino, ctimeNs := statIdentity(fi)
			e.LiveIno, e.LiveCtimeNs = trustedIdentity(fi, started)
			if p, ok := prevBy[rel]; ok && p.Kind == kindFile && p.Size == e.Size && p.MtimeNs == e.MtimeNs &&
				p.LiveIno == ino && p.LiveCtimeNs == ctimeNs && p.LiveIno != 0 {
				if err := os.Link(filepath.Join(prevTree, filepath.FromSlash(rel)), out); err == nil {
					e.Hashes = p.Hashes
					break
				}
			}
			// A file being written while the snapshot is taken (an app
			// appending) is copied up to the size just seen, and the entry
			// records what was copied, so size and block hashes agree.
			n, hashes, err := copyFileOut(path, out, e.Size)
			if err != nil {
				return err
			}
			e.Size = n
			copied += n
			e.Hashes = hashes
			if err := os.Chtimes(out, fi.ModTime(), fi.ModTime()); err != nil {
				return err
			}
		default:
			return nil // devices, sockets and pipes are not site data
		}
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return nil, copied, err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	return entries, copied, finishDirs(dst, entries)
}

// copyFileOut copies at most limit bytes of src to a new read-only dst and
// returns how many it copied and their block hashes.
func copyFileOut(src, dst string, limit int64) (int64, []byte, error) {
	in, err := os.Open(src)
	if err != nil {
		return 0, nil, err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o444)
	if err != nil {
		return 0, nil, err
	}
	n, hashes, err := hashingCopy(out, io.LimitReader(in, limit))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return n, hashes, err
}

// finishDirs sets directory times, deepest first (creating files inside a
// directory changes its mtime).
func finishDirs(root string, entries []entry) error {
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		if e.Kind != kindDir {
			continue
		}
		t := time.Unix(0, e.MtimeNs)
		if err := os.Chtimes(filepath.Join(root, filepath.FromSlash(e.Path)), t, t); err != nil {
			return err
		}
	}
	return nil
}

// materializeTree makes dst a tree equal to the snapshot tree src. With
// link, files are hard links to the (read-only) snapshot files, which is
// right for read-only replicas; otherwise they are independent writable
// copies with the recorded modes.
func materializeTree(src, dst string, m *manifest, link bool) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	for _, e := range m.Entries {
		from := filepath.Join(src, filepath.FromSlash(e.Path))
		to := filepath.Join(dst, filepath.FromSlash(e.Path))
		switch e.Kind {
		case kindDir:
			if err := os.Mkdir(to, 0o755); err != nil {
				return err
			}
		case kindSymlink:
			if err := os.Symlink(e.Target, to); err != nil {
				return err
			}
		case kindFile:
			if link {
				if err := os.Link(from, to); err != nil {
					return err
				}
				continue
			}
			if err := copyPlain(from, to, e.Mode); err != nil {
				return err
			}
			t := time.Unix(0, e.MtimeNs)
			if err := os.Chtimes(to, t, t); err != nil {
				return err
			}
		}
	}
	if !link {
		for i := len(m.Entries) - 1; i >= 0; i-- {
			e := m.Entries[i]
			if e.Kind == kindDir {
				if err := os.Chmod(filepath.Join(dst, filepath.FromSlash(e.Path)), e.Mode); err != nil {
					return err
				}
			}
		}
	}
	return finishDirs(dst, m.Entries)
}

func copyPlain(src, dst string, mode fs.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode|0o200)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode)
}

// treeBytes sums the sizes of distinct inodes under the given roots.
func treeBytes(roots ...string) int64 {
	seen := map[uint64]bool{}
	var total int64
	for _, root := range roots {
		_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if !d.Type().IsRegular() {
				return nil
			}
			fi, err := d.Info()
			if err != nil {
				return nil
			}
			ino, _ := statIdentity(fi)
			if ino != 0 {
				if seen[ino] {
					return nil
				}
				seen[ino] = true
			}
			total += fi.Size()
			return nil
		})
	}
	return total
}

// removeAll removes a tree even where directories were made read-only.
func removeAll(path string) error {
	err := os.RemoveAll(path)
	if err == nil || errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	_ = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			_ = os.Chmod(p, 0o755)
		}
		return nil
	})
	return os.RemoveAll(path)
}

// safeRel reports whether a stream-supplied relative path stays inside the tree.
func safeRel(p string) bool {
	if p == "" || strings.HasPrefix(p, "/") || strings.Contains(p, "\x00") {
		return false
	}
	for _, part := range strings.Split(p, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
	}
	return true
}

func sortSlice(entries []entry) {
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
}
