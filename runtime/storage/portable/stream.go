package portable

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// Stream payload after the storage.StreamHeader: a sequence of records,
//
//	op byte | uvarint len | JSON recordMeta | data
//
// op 'F' (whole file, Size bytes follow), 'P' (patch: the listed blocks
// follow, each blockBytes long except a short last block), 'D' (directory),
// 'L' (symlink), 'X' (path removed since the base), and finally 'E' (end,
// then the 32-byte SHA-256 of every payload byte before it). A stream
// without its end record is cut and is refused.

const recordMetaBytesMax = 1 << 20

type recordMeta struct {
	Path    string      `json:"p"`
	Mode    fs.FileMode `json:"m,omitempty"`
	Size    int64       `json:"s,omitempty"`
	MtimeNs int64       `json:"t,omitempty"`
	Target  string      `json:"l,omitempty"`
	Blocks  []int64     `json:"b,omitempty"`
	Count   int64       `json:"n,omitempty"`
}

func jsonUnmarshal(data []byte, v any) error { return json.Unmarshal(data, v) }

type ctxWriter struct {
	ctx context.Context
	w   io.Writer
}

func (c ctxWriter) Write(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.w.Write(p)
}

// plan lists the records an incremental (or full, from == nil) stream needs.
type planItem struct {
	op     byte
	e      *entry
	blocks []int64
}

func planStream(from, to *manifest) []planItem {
	var fromBy map[string]*entry
	if from != nil {
		fromBy = from.byPath()
	}
	var items []planItem
	toPaths := map[string]bool{}
	for i := range to.Entries {
		e := &to.Entries[i]
		toPaths[e.Path] = true
		old := fromBy[e.Path]
		switch e.Kind {
		case kindDir:
			if old == nil || old.Kind != kindDir || old.Mode != e.Mode || old.MtimeNs != e.MtimeNs {
				items = append(items, planItem{op: 'D', e: e})
			}
		case kindSymlink:
			if old == nil || old.Kind != kindSymlink || old.Target != e.Target || old.MtimeNs != e.MtimeNs {
				items = append(items, planItem{op: 'L', e: e})
			}
		case kindFile:
			if old == nil || old.Kind != kindFile {
				items = append(items, planItem{op: 'F', e: e})
				continue
			}
			var changed []int64
			n := len(e.Hashes) / hashBytes
			for b := 0; b < n; b++ {
				if (b+1)*hashBytes > len(old.Hashes) || !bytes.Equal(e.Hashes[b*hashBytes:(b+1)*hashBytes], old.Hashes[b*hashBytes:(b+1)*hashBytes]) {
					changed = append(changed, int64(b))
				}
			}
			if len(changed) > 0 || old.Size != e.Size || old.Mode != e.Mode || old.MtimeNs != e.MtimeNs {
				items = append(items, planItem{op: 'P', e: e, blocks: changed})
			}
		}
	}
	if from != nil {
		for i := range from.Entries {
			if !toPaths[from.Entries[i].Path] {
				items = append(items, planItem{op: 'X', e: &from.Entries[i]})
			}
		}
	}
	return items
}

func (p planItem) dataBytes() int64 {
	switch p.op {
	case 'F':
		return p.e.Size
	case 'P':
		var n int64
		for _, b := range p.blocks {
			n += min(blockBytes, p.e.Size-b*blockBytes)
		}
		return n
	}
	return 0
}

func (d *Driver) streamManifests(site storage.Site, from, to storage.SnapName) (*manifest, *manifest, error) {
	if err := checkSite(site); err != nil {
		return nil, nil, err
	}
	if err := checkSnap(to); err != nil {
		return nil, nil, err
	}
	toMan, err := d.findManifest(site, to)
	if err != nil {
		return nil, nil, err
	}
	var fromMan *manifest
	if !from.IsZero() {
		if fromMan, err = d.findManifest(site, from); err != nil {
			return nil, nil, err
		}
		if fromMan.Seq >= toMan.Seq {
			return nil, nil, fmt.Errorf("send %s: base %s is not older than %s", site, from, to)
		}
	}
	return fromMan, toMan, nil
}

// EstimateSendSize implements storage.Driver: exact payload bytes plus record overhead.
func (d *Driver) EstimateSendSize(ctx context.Context, site storage.Site, from, to storage.SnapName) (int64, error) {
	fromMan, toMan, err := d.streamManifests(site, from, to)
	if err != nil {
		return 0, err
	}
	var n int64 = 256
	for _, it := range planStream(fromMan, toMan) {
		n += it.dataBytes() + int64(len(it.e.Path)) + 64
	}
	return n, nil
}

// Send implements storage.Driver.
func (d *Driver) Send(ctx context.Context, site storage.Site, from, to storage.SnapName, w io.Writer) error {
	fromMan, toMan, err := d.streamManifests(site, from, to)
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	names := []string{to.String()}
	if fromMan != nil {
		names = append(names, from.String())
	}
	defer d.markSending(site, names...)()
	started := time.Now()
	h := storage.StreamHeader{Kind: Kind, To: storage.StreamSnap{Name: toMan.Name, GUID: toMan.GUID, Created: toMan.Created}}
	if fromMan != nil {
		h.From = &storage.StreamSnap{Name: fromMan.Name, GUID: fromMan.GUID, Created: fromMan.Created}
	}
	bw := bufio.NewWriterSize(ctxWriter{ctx, w}, 256<<10)
	if err := storage.WriteStreamHeader(bw, h); err != nil {
		return fmt.Errorf("send %s@%s: %w", site, to, err)
	}
	sum := sha256.New()
	out := io.MultiWriter(bw, sum)
	tree := filepath.Join(snapDir(d.siteDir(site), toMan.Name), "tree")
	items := planStream(fromMan, toMan)
	for _, it := range items {
		if err := writeRecord(out, tree, it); err != nil {
			return fmt.Errorf("send %s@%s: %w", site, to, err)
		}
	}
	if err := writeMeta(out, 'E', recordMeta{Count: int64(len(items))}); err != nil {
		return fmt.Errorf("send %s@%s: %w", site, to, err)
	}
	if _, err := bw.Write(sum.Sum(nil)); err != nil {
		return fmt.Errorf("send %s@%s: %w", site, to, err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("send %s@%s: %w", site, to, err)
	}
	d.log.Info("sent", "site", site.String(), "snapshot", to.String(), "base", from.String(), "records", len(items), "duration", time.Since(started))
	return nil
}

func writeMeta(w io.Writer, op byte, m recordMeta) error {
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	buf := make([]byte, 0, 1+binary.MaxVarintLen64+len(body))
	buf = append(buf, op)
	buf = binary.AppendUvarint(buf, uint64(len(body)))
	buf = append(buf, body...)
	_, err = w.Write(buf)
	return err
}

func writeRecord(w io.Writer, tree string, it planItem) error {
	e := it.e
	m := recordMeta{Path: e.Path, Mode: e.Mode, Size: e.Size, MtimeNs: e.MtimeNs, Target: e.Target, Blocks: it.blocks}
	if it.op == 'X' {
		m = recordMeta{Path: e.Path}
	}
	if err := writeMeta(w, it.op, m); err != nil {
		return err
	}
	if it.op != 'F' && it.op != 'P' {
		return nil
	}
	f, err := os.Open(filepath.Join(tree, filepath.FromSlash(e.Path)))
	if err != nil {
		return err
	}
	defer f.Close()
	if it.op == 'F' {
		n, err := io.Copy(w, io.LimitReader(f, e.Size))
		if err == nil && n != e.Size {
			err = fmt.Errorf("%s: snapshot file shorter than its manifest", e.Path)
		}
		return err
	}
	buf := make([]byte, blockBytes)
	for _, b := range it.blocks {
		n := min(blockBytes, e.Size-b*blockBytes)
		if n <= 0 {
			return fmt.Errorf("%s: block %d lies beyond the file's size %d in its manifest", e.Path, b, e.Size)
		}
		if _, err := f.ReadAt(buf[:n], b*blockBytes); err != nil && !(errors.Is(err, io.EOF)) {
			return err
		}
		if _, err := w.Write(buf[:n]); err != nil {
			return err
		}
	}
	return nil
}

// hashingReader hashes what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	return n, err
}

func (h *hashingReader) ReadByte() (byte, error) {
	var b [1]byte
	if _, err := io.ReadFull(h, b[:]); err != nil {
		return 0, err
	}
	return b[0], nil
}

// Receive implements storage.Driver.
func (d *Driver) Receive(ctx context.Context, site storage.Site, epoch storage.Epoch, base storage.SnapName, r io.Reader) (storage.Snapshot, error) {
	if err := checkSite(site); err != nil {
		return storage.Snapshot{}, err
	}
	defer d.lock(site)()
	snap, err := d.receiveLocked(ctx, site, epoch, base, r)
	if err != nil {
		return storage.Snapshot{}, fmt.Errorf("receive %s: %w", site, err)
	}
	return snap, nil
}

func (d *Driver) receiveLocked(ctx context.Context, site storage.Site, epoch storage.Epoch, base storage.SnapName, r io.Reader) (storage.Snapshot, error) {
	exists := true
	m, err := d.readMeta(site)
	if errors.Is(err, storage.ErrNoDataset) {
		exists = false
		m = &siteMeta{ReadOnly: true, Created: time.Now().UTC(), LiveGen: 0, NextSeq: 1}
	} else if err != nil {
		return storage.Snapshot{}, err
	}
	seen, err := storage.ParseEpoch(m.Epoch)
	if err != nil {
		return storage.Snapshot{}, err
	}
	if err := storage.CheckFence(seen, epoch); err != nil {
		return storage.Snapshot{}, err
	}
	if exists && !m.ReadOnly {
		return storage.Snapshot{}, storage.ErrNotReplica
	}
	var have []storage.Snapshot
	var heads []manifestHead // only heads: a receive may be a move's final delta
	var all []string         // every snapshot, safety snapshots included
	if exists {
		if heads, err = d.listHeads(site); err != nil {
			return storage.Snapshot{}, err
		}
		for _, h := range heads {
			all = append(all, h.name)
			if s, ok := h.snapshot(m); ok {
				have = append(have, s)
			}
		}
	}
	br := bufio.NewReaderSize(ctxReader{ctx, r}, 256<<10)
	h, err := storage.ReadStreamHeader(br, Kind)
	if err != nil {
		return storage.Snapshot{}, err
	}
	if err := storage.CheckStreamBase(h, base, have, exists); err != nil {
		return storage.Snapshot{}, err
	}
	if err := storage.CheckSafetyAfterBase(h, all); err != nil {
		return storage.Snapshot{}, err
	}
	if exists && h.From == nil {
		// A full stream onto a dataset without snapshots (a Stash of
		// everything left it): only if its live tree is empty, so nothing
		// unsnapshotted is overwritten, and only if no unlisted (safety)
		// snapshot is left either, as on ZFS.
		if len(heads) > 0 {
			return storage.Snapshot{}, fmt.Errorf("%w: full stream for a dataset that has %d snapshot(s) (e.g. %s)", storage.ErrNoCommonSnapshot, len(heads), heads[0].name)
		}
		if err := d.checkLiveEmpty(site); err != nil {
			return storage.Snapshot{}, err
		}
	}
	for _, hd := range heads {
		if hd.name == h.To.Name {
			return storage.Snapshot{}, fmt.Errorf("snapshot %s: %w", h.To.Name, storage.ErrExists)
		}
	}
	var baseMan *manifest
	baseTree := ""
	if h.From != nil {
		if len(heads) == 0 {
			return storage.Snapshot{}, fmt.Errorf("%w: incremental stream for a dataset without snapshots", storage.ErrNoCommonSnapshot)
		}
		last := heads[len(heads)-1].name
		if baseMan, err = readManifest(filepath.Join(snapDir(d.siteDir(site), last), "manifest.json")); err != nil {
			return storage.Snapshot{}, err
		}
		baseTree = filepath.Join(snapDir(d.siteDir(site), baseMan.Name), "tree")
	}
	budget := int64(-1)
	if m.QuotaBytes > 0 {
		budget = m.QuotaBytes
		if exists {
			budget -= treeBytes(d.siteDir(site), d.stashDir(site))
		}
	}
	tmp, err := d.tmpDir("recv-")
	if err != nil {
		return storage.Snapshot{}, err
	}
	defer removeAll(tmp)
	started := time.Now()
	ap := &applier{root: filepath.Join(tmp, "tree"), baseTree: baseTree, budget: budget, dirs: map[string]bool{"": true}, nondirs: map[string]bool{}, touched: map[string]*entry{}, deleted: map[string]bool{}}
	if err := os.Mkdir(ap.root, 0o755); err != nil {
		return storage.Snapshot{}, err
	}
	hr := &hashingReader{r: br, h: sha256.New()}
	var baseBy map[string]*entry
	if baseMan != nil {
		baseBy = baseMan.byPath()
	}
	records := int64(0)
	for {
		op, meta, err := readMeta(hr)
		if err != nil {
			return storage.Snapshot{}, mapFSError(err)
		}
		if op == 'E' {
			want := hr.h.Sum(nil)
			got := make([]byte, sha256.Size)
			if _, err := io.ReadFull(br, got); err != nil {
				return storage.Snapshot{}, fmt.Errorf("%w: cut in the trailer: %v", storage.ErrBadStream, err)
			}
			if !bytes.Equal(want, got) || meta.Count != records {
				return storage.Snapshot{}, fmt.Errorf("%w: checksum or record count mismatch", storage.ErrBadStream)
			}
			break
		}
		records++
		if err := ap.apply(hr, op, meta, baseBy); err != nil {
			return storage.Snapshot{}, mapFSError(err)
		}
	}
	entries, err := ap.finish(baseMan)
	if err != nil {
		return storage.Snapshot{}, mapFSError(err)
	}
	man := &manifest{Name: h.To.Name, GUID: h.To.GUID, Created: h.To.Created, Seq: m.NextSeq, Entries: entries}
	if err := writeJSONAtomic(filepath.Join(tmp, "manifest.json"), man); err != nil {
		return storage.Snapshot{}, mapFSError(err)
	}
	if err := ctx.Err(); err != nil {
		return storage.Snapshot{}, err
	}
	m.NextSeq++
	if !epoch.IsZero() && seen.Less(epoch) {
		m.Epoch = epoch.String()
	}
	// Commit: one rename puts the snapshot in place; the live tree follows.
	if !exists {
		siteTmp, err := d.tmpDir("newsite-")
		if err != nil {
			return storage.Snapshot{}, err
		}
		defer removeAll(siteTmp)
		if err := os.MkdirAll(filepath.Join(siteTmp, "snaps"), 0o755); err != nil {
			return storage.Snapshot{}, err
		}
		if err := os.Rename(tmp, snapDir(siteTmp, man.Name)); err != nil {
			return storage.Snapshot{}, err
		}
		m.LiveGen = 1
		if err := os.MkdirAll(filepath.Join(siteTmp, "trees"), 0o755); err != nil {
			return storage.Snapshot{}, err
		}
		// Writable copies, kept up to date by later receives (warm.go).
		if err := materializeTree(filepath.Join(snapDir(siteTmp, man.Name), "tree"), filepath.Join(siteTmp, "trees", "1"), man, false); err != nil {
			return storage.Snapshot{}, mapFSError(err)
		}
		m.Warm = man.Name
		if err := os.Symlink(filepath.Join("trees", "1"), filepath.Join(siteTmp, "live")); err != nil {
			return storage.Snapshot{}, err
		}
		if err := writeJSONAtomic(filepath.Join(siteTmp, "meta.json"), m); err != nil {
			return storage.Snapshot{}, err
		}
		if err := os.Rename(siteTmp, d.siteDir(site)); err != nil {
			return storage.Snapshot{}, err
		}
	} else {
		if err := os.Rename(tmp, snapDir(d.siteDir(site), man.Name)); err != nil {
			return storage.Snapshot{}, err
		}
		if err := d.writeMeta(site, m); err != nil {
			return storage.Snapshot{}, err
		}
		if err := d.updateLive(site, m, baseMan, man); err != nil {
			return storage.Snapshot{}, mapFSError(err)
		}
	}
	d.log.Info("received", "site", site.String(), "snapshot", man.Name, "base", base.String(), "epoch", epoch.String(), "written_bytes", ap.written, "duration", time.Since(started))
	return d.toSnapshot(site, m, man), nil
}

func (d *Driver) checkLiveEmpty(site storage.Site) error {
	live, err := filepath.EvalSymlinks(filepath.Join(d.siteDir(site), "live"))
	if err != nil {
		return err
	}
	ents, err := os.ReadDir(live)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%w: full stream for a dataset without snapshots whose live tree is not empty (%d entries); stash it first", storage.ErrNoCommonSnapshot, len(ents))
	}
	return nil
}

type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func readMeta(r *hashingReader) (byte, recordMeta, error) {
	var m recordMeta
	op, err := r.ReadByte()
	if err != nil {
		return 0, m, fmt.Errorf("%w: stream cut before its end record: %v", storage.ErrBadStream, err)
	}
	n, err := binary.ReadUvarint(r)
	if err != nil || n > recordMetaBytesMax {
		return 0, m, fmt.Errorf("%w: record header: %v", storage.ErrBadStream, err)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, m, fmt.Errorf("%w: record header cut: %v", storage.ErrBadStream, err)
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, m, fmt.Errorf("%w: record header: %v", storage.ErrBadStream, err)
	}
	switch op {
	case 'E':
		return op, m, nil
	case 'F', 'P', 'D', 'L', 'X':
	default:
		return 0, m, fmt.Errorf("%w: unknown record %q", storage.ErrBadStream, op)
	}
	if !safeRel(m.Path) {
		return 0, m, fmt.Errorf("%w: unsafe path %q", storage.ErrBadStream, m.Path)
	}
	if m.Size < 0 {
		return 0, m, fmt.Errorf("%w: negative size", storage.ErrBadStream)
	}
	return op, m, nil
}

// applier builds the received snapshot's tree in a temporary directory.
type applier struct {
	root, baseTree string
	budget         int64 // bytes still allowed by the quota; -1 = no quota
	written        int64
	dirs, nondirs  map[string]bool
	touched        map[string]*entry
	deleted        map[string]bool
}

func (a *applier) charge(n int64) error {
	a.written += n
	if a.budget >= 0 && a.written > a.budget {
		return fmt.Errorf("%w: stream exceeds the dataset's quota", storage.ErrOutOfSpace)
	}
	return nil
}

func (a *applier) ensureParent(rel string) error {
	dir := filepath.ToSlash(filepath.Dir(filepath.FromSlash(rel)))
	if dir == "." {
		dir = ""
	}
	if a.dirs[dir] {
		return nil
	}
	if a.nondirs[dir] {
		return fmt.Errorf("%w: %s is inside a non-directory", storage.ErrBadStream, rel)
	}
	if err := a.ensureParent(dir); err != nil {
		return err
	}
	if err := os.Mkdir(filepath.Join(a.root, filepath.FromSlash(dir)), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	a.dirs[dir] = true
	return nil
}

func (a *applier) apply(r io.Reader, op byte, m recordMeta, baseBy map[string]*entry) error {
	if op == 'X' {
		a.deleted[m.Path] = true
		return nil
	}
	if a.touched[m.Path] != nil {
		return fmt.Errorf("%w: %s appears twice", storage.ErrBadStream, m.Path)
	}
	if err := a.ensureParent(m.Path); err != nil {
		return err
	}
	out := filepath.Join(a.root, filepath.FromSlash(m.Path))
	e := &entry{Path: m.Path, Mode: m.Mode.Perm(), Size: m.Size, MtimeNs: m.MtimeNs, Target: m.Target}
	switch op {
	case 'D':
		e.Kind = kindDir
		if err := os.Mkdir(out, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return err
		}
		a.dirs[m.Path] = true
	case 'L':
		e.Kind = kindSymlink
		a.nondirs[m.Path] = true
		if err := os.Symlink(m.Target, out); err != nil {
			return err
		}
	case 'F':
		e.Kind = kindFile
		a.nondirs[m.Path] = true
		if err := a.charge(m.Size); err != nil {
			return err
		}
		f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		n, hashes, err := hashingCopy(f, io.LimitReader(r, m.Size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if n != m.Size {
			return fmt.Errorf("%w: cut inside %s", storage.ErrBadStream, m.Path)
		}
		e.Hashes = hashes
	case 'P':
		e.Kind = kindFile
		a.nondirs[m.Path] = true
		old := baseBy[m.Path]
		if old == nil || old.Kind != kindFile {
			return fmt.Errorf("%w: patch of %s which the base lacks", storage.ErrBadStream, m.Path)
		}
		if err := a.patch(r, out, old, m, e); err != nil {
			return err
		}
	}
	a.touched[m.Path] = e
	return nil
}

func (a *applier) patch(r io.Reader, out string, old *entry, m recordMeta, e *entry) error {
	nblocks := (m.Size + blockBytes - 1) / blockBytes
	// Without copy-on-write the patched file is a whole new copy on disk.
	if err := a.charge(m.Size); err != nil {
		return err
	}
	if err := copyPlain(filepath.Join(a.baseTree, filepath.FromSlash(m.Path)), out, 0o644); err != nil {
		return err
	}
	f, err := os.OpenFile(out, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Truncate(m.Size); err != nil {
		return err
	}
	hashes := make([]byte, nblocks*hashBytes)
	copy(hashes, old.Hashes)
	received := map[int64]bool{}
	buf := make([]byte, blockBytes)
	for _, b := range m.Blocks {
		if b < 0 || b >= nblocks || received[b] {
			return fmt.Errorf("%w: bad block %d of %s", storage.ErrBadStream, b, m.Path)
		}
		received[b] = true
		n := min(blockBytes, m.Size-b*blockBytes)
		if _, err := io.ReadFull(r, buf[:n]); err != nil {
			return fmt.Errorf("%w: cut inside %s: %v", storage.ErrBadStream, m.Path, err)
		}
		if _, err := f.WriteAt(buf[:n], b*blockBytes); err != nil {
			return err
		}
		sum := sha256.Sum256(buf[:n])
		copy(hashes[b*hashBytes:], sum[:])
	}
	// A block the base did not have (the file grew) must have been sent, and
	// so must a last block whose length changed.
	oldBlocks := int64(len(old.Hashes) / hashBytes)
	for b := int64(0); b < nblocks; b++ {
		partialChanged := b == nblocks-1 && old.Size != m.Size && b < oldBlocks
		if (b >= oldBlocks || partialChanged) && !received[b] {
			return fmt.Errorf("%w: %s block %d missing", storage.ErrBadStream, m.Path, b)
		}
	}
	e.Hashes = hashes
	return nil
}

// finish links what the stream did not change from the base and returns
// the new snapshot's entries.
func (a *applier) finish(base *manifest) ([]entry, error) {
	var entries []entry
	if base != nil {
		for _, e := range base.Entries {
			if a.deleted[e.Path] || a.touched[e.Path] != nil {
				continue
			}
			if err := a.ensureParent(e.Path); err != nil {
				return nil, err
			}
			out := filepath.Join(a.root, filepath.FromSlash(e.Path))
			switch e.Kind {
			case kindDir:
				if err := os.Mkdir(out, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
					return nil, err
				}
				a.dirs[e.Path] = true
			case kindSymlink:
				if err := os.Symlink(e.Target, out); err != nil {
					return nil, err
				}
			case kindFile:
				if err := os.Link(filepath.Join(a.baseTree, filepath.FromSlash(e.Path)), out); err != nil {
					return nil, err
				}
			}
			e.LiveIno, e.LiveCtimeNs = 0, 0
			entries = append(entries, e)
		}
	}
	for _, e := range a.touched {
		entries = append(entries, *e)
	}
	sortEntries(entries)
	// Files written from the stream: read-only, with their mode and time.
	for _, e := range entries {
		if e.Kind != kindFile || a.touched[e.Path] == nil {
			continue
		}
		p := filepath.Join(a.root, filepath.FromSlash(e.Path))
		if err := os.Chmod(p, 0o444); err != nil {
			return nil, err
		}
		t := time.Unix(0, e.MtimeNs)
		if err := os.Chtimes(p, t, t); err != nil {
			return nil, err
		}
	}
	// Every directory that holds something must itself be an entry.
	for _, e := range entries {
		dir := filepath.ToSlash(filepath.Dir(filepath.FromSlash(e.Path)))
		if dir == "." {
			continue
		}
		if !a.isDirEntry(entries, dir) {
			return nil, fmt.Errorf("%w: %s has no directory entry for %s", storage.ErrBadStream, e.Path, dir)
		}
	}
	return entries, finishDirs(a.root, entries)
}

func (a *applier) isDirEntry(entries []entry, dir string) bool {
	if e := a.touched[dir]; e != nil {
		return e.Kind == kindDir
	}
	// Binary search the sorted entries.
	lo, hi := 0, len(entries)
	for lo < hi {
		mid := (lo + hi) / 2
		if entries[mid].Path < dir {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo < len(entries) && entries[lo].Path == dir && entries[lo].Kind == kindDir
}

func sortEntries(entries []entry) {
	sortSlice(entries)
}
