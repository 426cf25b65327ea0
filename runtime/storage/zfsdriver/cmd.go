package zfsdriver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strings"
	"time"

	gozfs "github.com/mistifyio/go-zfs/v3"

	"github.com/hybridcluster/hybridcluster/runtime/storage"
)

// The choke point: every zfs and zpool command of this package, whether
// run by go-zfs or directly (the ones go-zfs cannot express: send with
// cancellation, receive -F, hold, release, promote, get -Hp), goes through
// Driver.do. It logs start and end with the duration, keeps the last
// stderrBytesMax of stderr, maps known stderr text to storage errors and
// decides retries, all in one place.

const (
	// stderrBytesMax bounds the stderr kept per command.
	stderrBytesMax = 4 << 10
	// busyRetryMax bounds retries of a command that failed with "dataset is
	// busy" (fresh mounts, FUSE lag); busyRetryDelay is the pause between them.
	busyRetryMax   = 5
	busyRetryDelay = 200 * time.Millisecond
)

// opProbe marks commands whose failure is an expected answer (does this
// dataset exist?); they fail at debug level.
const opProbe = "probe"

// call is one command to run through the choke point.
type call struct {
	op   string   // what the driver is doing, for logs
	argv []string // the command line, for logs and errors
	// run carries the command out and returns its stderr.
	run func(ctx context.Context) (stderr string, err error)
	// retryBusy allows bounded retries on "busy"; beforeRetry (optional)
	// runs before each retry, e.g. to unmount.
	retryBusy   bool
	beforeRetry func(ctx context.Context)
	// movesNothing: the caller knows this command creates, removes and
	// renames no dataset (e.g. a receive into a dataset that exists),
	// so kept locations stay (locate.go).
	movesNothing bool
}

// CommandError is a failed zfs or zpool command.
type CommandError struct {
	Argv   []string
	Stderr string // the last stderrBytesMax bytes
	Kind   error  // the storage.Err* the stderr maps to, or nil
	Err    error  // the process error
}

func (e *CommandError) Error() string {
	msg := strings.TrimSpace(e.Stderr)
	if msg == "" && e.Err != nil {
		msg = e.Err.Error()
	}
	if e.Kind != nil {
		return fmt.Sprintf("%s: %v: %s", strings.Join(e.Argv, " "), e.Kind, msg)
	}
	return fmt.Sprintf("%s: %s", strings.Join(e.Argv, " "), msg)
}

// Unwrap exposes both the typed storage error and the process error.
func (e *CommandError) Unwrap() []error {
	out := []error{}
	if e.Kind != nil {
		out = append(out, e.Kind)
	}
	if e.Err != nil {
		out = append(out, e.Err)
	}
	return out
}

// stderrPatterns maps zfs stderr text to typed errors; first match wins.
var stderrPatterns = []struct {
	text string
	kind error
}{
	{"dataset does not exist", storage.ErrNoDataset},
	{"could not find any snapshots", storage.ErrNoDataset},
	{"no such pool", storage.ErrNoDataset},
	{"no such tag", storage.ErrNoDataset},
	{"dataset already exists", storage.ErrExists},
	{"tag already exists", storage.ErrExists},
	{"already exists", storage.ErrExists},
	{"out of space", storage.ErrOutOfSpace},
	{"quota exceeded", storage.ErrOutOfSpace},
	{"no space left", storage.ErrOutOfSpace},
	{"does not match incremental source", storage.ErrNoCommonSnapshot},
	{"destination has been modified", storage.ErrDiverged},
	{"destination has snapshots", storage.ErrDiverged},
	{"must destroy them to overwrite", storage.ErrDiverged},
	{"has dependent clones", storage.ErrBusy},
	{"dataset is busy", storage.ErrBusy},
	{"pool or dataset is busy", storage.ErrBusy},
	{"pool is busy", storage.ErrBusy},
	{"invalid backup stream", storage.ErrBadStream},
	{"checksum mismatch", storage.ErrBadStream},
	{"incomplete stream", storage.ErrBadStream},
	{"invalid stream", storage.ErrBadStream},
	{"stream ends early", storage.ErrBadStream},
	{"invalid option", errUnsupported},
	{"invalid property", errUnsupported},
}

// errUnsupported marks an option or property this zfs does not know (e.g.
// `send -n` on zfs-fuse); callers fall back.
var errUnsupported = errors.New("not supported by this zfs")

func classify(stderr string) error {
	low := strings.ToLower(stderr)
	for _, p := range stderrPatterns {
		if strings.Contains(low, p.text) {
			return p.kind
		}
	}
	return nil
}

// tailBuffer keeps the last stderrBytesMax bytes written to it.
type tailBuffer struct{ buf []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > stderrBytesMax {
		t.buf = append(t.buf[:0], t.buf[len(t.buf)-stderrBytesMax:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.buf) }

func (d *Driver) do(ctx context.Context, c call) error {
	if !c.movesNothing && d.forgetsLocations(c.argv) {
		// Before and after: a locate that probes meanwhile is not kept.
		d.forgetLocations()
		defer d.forgetLocations()
	}
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("%s: %w", strings.Join(c.argv, " "), err)
		}
		started := time.Now()
		d.log.Debug("zfs start", "op", c.op, "argv", strings.Join(c.argv, " "), "attempt", attempt)
		stderr, err := c.run(ctx)
		elapsed := time.Since(started)
		if err == nil {
			d.log.Debug("zfs done", "op", c.op, "argv", strings.Join(c.argv, " "), "duration", elapsed)
			return nil
		}
		if len(stderr) > stderrBytesMax {
			stderr = stderr[len(stderr)-stderrBytesMax:]
		}
		kind := classify(stderr)
		if ctx.Err() != nil {
			kind = nil
			err = errors.Join(err, ctx.Err())
		}
		if c.op != opProbe && errors.Is(kind, storage.ErrNoDataset) {
			// A dataset the driver thought was there is not: what it
			// knows of locations may be stale too.
			d.forgetLocations()
		}
		cerr := &CommandError{Argv: c.argv, Stderr: stderr, Kind: kind, Err: err}
		retry := c.retryBusy && errors.Is(kind, storage.ErrBusy) && attempt < busyRetryMax
		level := slog.LevelWarn
		if c.op == opProbe || errors.Is(kind, errUnsupported) || strings.Contains(stderr, "not currently mounted") || retry {
			// A busy dataset that will be retried is not yet a problem
			// (zfs-fuse reports fresh mounts busy for a moment); the last
			// attempt's failure is logged at Warn.
			level = slog.LevelDebug // an answer the caller expects, not a problem
		}
		d.log.Log(ctx, level, "zfs failed", "op", c.op, "argv", strings.Join(c.argv, " "), "duration", elapsed,
			"stderr", strings.TrimSpace(stderr), "retry", retry)
		if !retry {
			return cerr
		}
		if c.beforeRetry != nil {
			c.beforeRetry(ctx)
		}
		select {
		case <-ctx.Done():
			return cerr
		case <-time.After(busyRetryDelay):
		}
	}
}

// command runs a zfs or zpool command directly.
func (d *Driver) command(ctx context.Context, op string, prog string, args []string, stdin io.Reader, stdout io.Writer) ([]byte, error) {
	return d.commandRetry(ctx, op, prog, args, stdin, stdout, false)
}

// commandRetry is command with bounded retries while the target is busy
// (only for commands without stdin, which cannot be replayed).
func (d *Driver) commandRetry(ctx context.Context, op string, prog string, args []string, stdin io.Reader, stdout io.Writer, retryBusy bool) ([]byte, error) {
	return d.commandCall(ctx, call{op: op, retryBusy: retryBusy && stdin == nil}, prog, args, stdin, stdout)
}

// commandCall runs prog with args as c describes (c.argv and c.run are
// filled in here).
func (d *Driver) commandCall(ctx context.Context, c call, prog string, args []string, stdin io.Reader, stdout io.Writer) ([]byte, error) {
	var out bytes.Buffer
	if stdout == nil {
		stdout = &out
	}
	c.argv = append([]string{prog}, args...)
	c.run = func(ctx context.Context) (string, error) {
		out.Reset()
		cmd := exec.CommandContext(ctx, prog, args...)
		cmd.Stdin = stdin
		cmd.Stdout = stdout
		var stderr tailBuffer
		cmd.Stderr = &stderr
		cmd.WaitDelay = commandWaitDelay
		err := cmd.Run()
		return stderr.String(), err
	}
	err := d.do(ctx, c)
	return out.Bytes(), err
}

// commandWaitDelay bounds how long a killed command may keep its pipes open.
const commandWaitDelay = 5 * time.Second

// gozfs runs a go-zfs call through the choke point. go-zfs does not take a
// context; ctx is checked before the call.
func (d *Driver) gozfs(ctx context.Context, op string, argv []string, retryBusy bool, beforeRetry func(context.Context), fn func() error) error {
	return d.do(ctx, call{op: op, argv: append([]string{"zfs"}, argv...), retryBusy: retryBusy, beforeRetry: beforeRetry,
		run: func(ctx context.Context) (string, error) {
			err := fn()
			var zerr *gozfs.Error
			if errors.As(err, &zerr) {
				return zerr.Stderr, err
			}
			if err != nil {
				return err.Error(), err
			}
			return "", nil
		}})
}

func newLogger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
