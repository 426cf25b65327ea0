//go:build linux

package mysql

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// Bounds of the event loops.
const (
	// loopsMax bounds the event loops of a front end: each is one
	// goroutine.
	loopsMax = 4
	// processorsPerLoop: a front end runs one loop per this many
	// processors (at least one). A loop's goroutine waits in Go's poller,
	// and Go has one thread waiting there at a time: while one loop runs,
	// another's events wait for it to finish its round, so on 2 cores two
	// loops added wake-ups and no parallelism (lower of the text and
	// prepared QPS ratios to HAProxy 0.90-0.94x with two, 0.93-1.02x with
	// one, in the same hour; one loop relays ~100k queries a second;
	// again with the raw system calls, alternated: 1.01 and 0.98 with two
	// against 1.05 and 1.01 with one).
	processorsPerLoop = 4
	// loopEventsMax is how many readiness events one wait takes; more
	// wait for the next round.
	loopEventsMax = 128
	// loopSessionsMax bounds the sessions of one loop; beyond, a session
	// stays with its goroutine.
	loopSessionsMax = connectionsMax
	// progressBytesMax bounds what one session relays before the loop
	// turns to the others (it goes on after their events).
	progressBytesMax = 256 << 10
)

// eventLoops are a front end's event loops; sessions are spread over
// them in turn.
type eventLoops struct {
	// commands counts the commands the loops relayed.
	commands atomic.Uint64
	mu       sync.Mutex
	loops    []*eventLoop
	next     atomic.Uint32
	closed   bool
}

func newEventLoops() *eventLoops { return &eventLoops{} }

// LoopCommands is how many commands the event loops relayed.
func (f *Front) LoopCommands() uint64 {
	if f.loops == nil {
		return 0
	}
	return f.loops.commands.Load()
}

// serve runs r's session in a loop until it is handed back. ran: false
// when no loop could take it (closed, or none could start).
func (ls *eventLoops) serve(r *relay, cfd, sfd int) (ran bool, err error) {
	l := ls.pick()
	if l == nil {
		return false, nil
	}
	return l.serve(r, cfd, sfd)
}

func (ls *eventLoops) pick() *eventLoop {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.closed {
		return nil
	}
	if ls.loops == nil {
		n := loopsFor(runtime.GOMAXPROCS(0))
		for range n {
			l, err := newEventLoop()
			if err != nil {
				break
			}
			ls.loops = append(ls.loops, l)
		}
		if len(ls.loops) == 0 {
			ls.closed = true
			return nil
		}
	}
	return ls.loops[int(ls.next.Add(1))%len(ls.loops)]
}

// loopsFor is how many event loops a front end runs on procs processors.
func loopsFor(procs int) int {
	return min(max(1, procs/processorsPerLoop), loopsMax)
}

// close hands every session back (with an error) and stops the loops.
func (ls *eventLoops) close() {
	if ls == nil {
		return
	}
	ls.mu.Lock()
	ls.closed = true
	loops := ls.loops
	ls.mu.Unlock()
	for _, l := range loops {
		l.close()
	}
}

// eventLoop is one epoll set and the goroutine that waits on it. The
// goroutine parks in Go's poller on the epoll descriptor itself, so a
// round of events costs one wake-up however many sessions it serves.
// (Waiting in epoll_wait itself, as HAProxy's threads do, was tried: the
// loop then holds a processor while it waits, and the rest of the node
// and Go's scheduler paid more than the wake-ups cost. Tried again with
// raw system calls, and with one more processor for the node so that
// none was held from the rest: 0.83-0.91x of HAProxy's QPS against
// 1.00-1.05x in the same hour, and the site's server spent more per
// query, woken for smaller batches. A loop that polled again a few times
// before parking did not cut the machine's idle time either.)
type eventLoop struct {
	epfd   int
	file   *os.File
	raw    syscall.RawConn
	events [loopEventsMax]syscall.EpollEvent
	wait   func(fd uintptr) bool

	// again are the sessions whose progress stopped at their budget;
	// spare is again's other slice.
	again, spare []*loopSession

	mu       sync.Mutex
	sessions []*loopSession // by slot; nil: free
	free     []int32
	closed   bool
	stopped  chan struct{}
}

var errLoopClosed = errors.New("mysql: front end closed")

func newEventLoop() (*eventLoop, error) {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
		return nil, err
	}
	file := os.NewFile(uintptr(epfd), "mysql-event-loop")
	raw, err := file.SyscallConn()
	if err != nil {
		file.Close()
		return nil, err
	}
	l := &eventLoop{epfd: epfd, file: file, raw: raw, stopped: make(chan struct{})}
	l.wait = l.round
	go l.run()
	return l, nil
}

func (l *eventLoop) run() {
	defer close(l.stopped)
	// The rounds run inside one RawConn.Read, which returns only when the
	// epoll descriptor is closed (or fails): between rounds the goroutine
	// waits in Go's poller for the descriptor's next edge without the
	// reset a new Read makes, so a round that took every event is not
	// followed by an empty epoll_wait before the goroutine parks.
	_ = l.raw.Read(l.wait)
	// Closed: every session goes back to its goroutine.
	l.mu.Lock()
	l.closed = true
	sessions := l.sessions
	l.mu.Unlock()
	for _, s := range sessions {
		if s != nil {
			s.handBack(errClient{errLoopClosed})
			s.done <- s.backErr
		}
	}
}

// round takes the ready events (none: false, the goroutine waits for
// the descriptor's next edge) and relays what they allow, then the
// sessions whose turn ended at their budget, until no session has work
// left. true: stop (the descriptor failed).
func (l *eventLoop) round(fd uintptr) bool {
	for {
		n, err := epollPoll(int(fd), l.events[:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return true
		}
		for i := range n {
			ev := l.events[i]
			l.mu.Lock()
			var s *loopSession
			if int(ev.Fd) < len(l.sessions) {
				s = l.sessions[ev.Fd]
			}
			l.mu.Unlock()
			if s == nil {
				continue // handed back earlier in this round
			}
			if ev.Events&(syscall.EPOLLIN|syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0 {
				if ev.Pad == 0 {
					s.cReadable = true
				} else {
					s.sReadable = true
				}
			}
			l.progress(s)
		}
		if n == len(l.events) {
			continue // more may be ready: no edge would say so
		}
		if len(l.again) == 0 {
			return false
		}
		again := l.again
		l.again = l.spare[:0]
		for _, s := range again {
			l.mu.Lock()
			mine := int(s.slot) < len(l.sessions) && l.sessions[s.slot] == s
			l.mu.Unlock()
			if mine && s.r != nil {
				l.progress(s)
			}
		}
		l.spare = again[:0]
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed {
			return true
		}
	}
}

// progress runs a session's relay as far as its sockets allow, or up to
// progressBytesMax (then again after the next round of events, so that a
// long answer does not hold up the other sessions).
func (l *eventLoop) progress(s *loopSession) {
	s.budget = progressBytesMax
	s.progress()
	if s.handedBack {
		// The last the loop does with the session: its goroutine owns it
		// from here.
		s.done <- s.backErr
		return
	}
	if s.budget <= 0 {
		l.again = append(l.again, s)
	}
}

// close stops the loop and waits until it handed its sessions back.
func (l *eventLoop) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
	l.file.Close()
	<-l.stopped
}

// serve adds r's session and waits until the loop hands it back.
func (l *eventLoop) serve(r *relay, cfd, sfd int) (bool, error) {
	s := r.lp
	if s.cin == nil {
		s.cin, s.sin, s.done = make([]byte, loopBufferSize), make([]byte, loopBufferSize), make(chan error, 1)
	}
	s.l, s.cfd, s.sfd, s.r = l, cfd, sfd, r
	s.cinN, s.sinN, s.scanned, s.written, s.cmdOut, s.awaiting, s.handedBack = 0, 0, 0, 0, nil, false, false
	// Until the loop says otherwise both may have bytes (edge-triggered
	// readiness reports only what arrives from now on).
	s.cReadable, s.sReadable = true, true
	l.mu.Lock()
	if l.closed || len(l.sessions)-len(l.free) >= loopSessionsMax {
		l.mu.Unlock()
		return false, nil
	}
	if n := len(l.free); n > 0 {
		s.slot, l.free = l.free[n-1], l.free[:n-1]
	} else {
		s.slot = int32(len(l.sessions))
		l.sessions = append(l.sessions, nil)
	}
	l.sessions[s.slot] = s
	// Registered under the lock: the loop sees the session only once
	// both descriptors are in the set, and then reads them as ready.
	// Writability only while a write waits for room (watch): the server's
	// unix socket reports room again each time the server reads a command.
	// The loop is told about the descriptors being ready as they are added.
	s.cWatch, s.sWatch = false, false
	errC := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, cfd, &syscall.EpollEvent{Events: readEvents, Fd: s.slot, Pad: 0})
	errS := syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_ADD, sfd, &syscall.EpollEvent{Events: readEvents, Fd: s.slot, Pad: 1})
	if errC != nil || errS != nil {
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, cfd, nil)
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, sfd, nil)
		l.sessions[s.slot] = nil
		l.free = append(l.free, s.slot)
		l.mu.Unlock()
		return false, nil
	}
	l.mu.Unlock()
	err := <-s.done
	s.r = nil
	return true, err
}

// Readiness the loop asks for: edge-triggered, so a descriptor is read
// until a short read says it is empty.
const (
	readEvents  uint32 = syscall.EPOLLIN | syscall.EPOLLRDHUP | 1<<31 // EPOLLET
	writeEvents        = readEvents | syscall.EPOLLOUT
)

// watch asks (or stops asking) for the client's (side 0) or server's
// (side 1) socket's room to write.
func (s *loopSession) watch(side int32, on bool) {
	fd, w := s.cfd, &s.cWatch
	if side == 1 {
		fd, w = s.sfd, &s.sWatch
	}
	if *w == on {
		return
	}
	*w = on
	events := readEvents
	if on {
		events = writeEvents
	}
	ev := syscall.EpollEvent{Events: events, Fd: s.slot, Pad: side}
	_, _, _ = syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(s.l.epfd), syscall.EPOLL_CTL_MOD, uintptr(fd), uintptr(unsafe.Pointer(&ev)), 0, 0)
}

// handBack takes the session out of the loop, for its goroutine with the
// bytes read and not relayed (loop goroutine only; run then wakes the
// goroutine).
func (s *loopSession) handBack(err error) {
	if s.handedBack {
		return
	}
	s.handedBack, s.backErr = true, err
	l := s.l
	l.mu.Lock()
	if !l.closed { // closed: so is the epoll descriptor (its number may be another's now)
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, s.cfd, nil)
		_ = syscall.EpollCtl(l.epfd, syscall.EPOLL_CTL_DEL, s.sfd, nil)
	}
	l.sessions[s.slot] = nil
	l.free = append(l.free, s.slot)
	l.mu.Unlock()
	if s.cinN > 0 {
		s.client.pending = append([]byte(nil), s.cin[:s.cinN]...)
	}
	if s.sinN > s.written && err == nil {
		s.server.pending = append([]byte(nil), s.sin[s.written:s.sinN]...)
	}
}

// progress relays what the ready sockets allow (loop goroutine only).
func (s *loopSession) progress() {
	r := s.r
	for !s.handedBack {
		// The answer so far goes to the client first.
		if s.written < s.scanned {
			n, err := rawWrite(s.cfd, s.sin[s.written:s.scanned])
			if err == syscall.EAGAIN {
				s.watch(0, true)
				return // the client's buffer is full: its next edge
			}
			if err != nil {
				s.handBack(errClient{err})
				return
			}
			s.written += n
			r.forwarded = true
			if s.written < s.scanned {
				continue
			}
			s.watch(0, false)
			// All of it went: the unscanned rest moves to the front.
			copy(s.sin, s.sin[s.scanned:s.sinN])
			s.sinN -= s.scanned
			s.scanned, s.written = 0, 0
		}
		if s.awaiting {
			if len(s.cmdOut) > 0 {
				n, err := rawWrite(s.sfd, s.cmdOut)
				if err == syscall.EAGAIN {
					s.watch(1, true)
					return
				}
				if err != nil {
					s.handBack(errServer{err, true})
					return
				}
				if s.cmdOut = s.cmdOut[n:]; len(s.cmdOut) == 0 {
					s.watch(1, false)
				}
				continue
			}
			if s.answer.done() {
				s.finish()
				continue
			}
			refused, whole := false, false
			if s.scanned == 0 {
				refused, whole = r.refusedByMaster(s.sin[:s.sinN])
			}
			if refused && whole {
				s.sinN = 0 // the master closes the tunnel after it
				s.handBack(errNotAdmitted)
				return
			}
			if s.sinN > s.scanned && !refused { // refused: its rest is still to read
				n, err := s.answer.scan(s.sin[s.scanned:s.sinN])
				if err != nil {
					s.handBack(err)
					return
				}
				s.scanned += n
				if n > 0 || s.answer.done() {
					continue
				}
			}
			if !s.sReadable {
				return
			}
			n, err := rawRead(s.sfd, s.sin[s.sinN:])
			switch {
			case err == syscall.EAGAIN:
				s.sReadable = false
				return
			case err != nil:
				s.handBack(errServer{err, true})
				return
			case n == 0:
				s.handBack(errServer{io.ErrUnexpectedEOF, true})
				return
			}
			s.sReadable = s.sinN+n == len(s.sin) // a short read emptied the socket
			s.sinN += n
			if s.budget -= n; s.budget <= 0 {
				return // more after the other sessions' turn
			}
			continue
		}
		// Between commands.
		if s.cinN >= 4 {
			n := int(s.cin[0]) | int(s.cin[1])<<8 | int(s.cin[2])<<16
			if 4+n > len(s.cin) || n == 0 {
				s.handBack(nil) // long (or empty): the goroutine's
				return
			}
			if s.cinN >= 4+n {
				s.command(n)
				continue
			}
		}
		if !s.cReadable {
			return
		}
		n, err := rawRead(s.cfd, s.cin[s.cinN:])
		switch {
		case err == syscall.EAGAIN:
			s.cReadable = false
			return
		case err != nil:
			s.handBack(errClient{err})
			return
		case n == 0:
			s.handBack(errClient{io.EOF})
			return
		}
		s.cReadable = s.cinN+n == len(s.cin)
		s.cinN += n
	}
}

// command relays the client's command cin[:4+n], as relay.command does,
// or hands the session back for it.
func (s *loopSession) command(n int) {
	r := s.r
	p := packet{seq: s.cin[3], payload: s.cin[4 : 4+n]}
	// After a move the statement ids are mapped in place, which the loop
	// does too; an execute that needs its parameter types put in grows,
	// which only the goroutine's relay does.
	if !loopCommand(p.payload) || r.session.grows(p.payload) {
		s.handBack(nil)
		return
	}
	r.hold(p)
	if r.admission != nil && !r.admission.Enter(cancelled) {
		s.handBack(nil) // the goroutine waits for the site, or moves
		return
	}
	if r.stale != nil && r.stale() {
		s.handBack(nil)
		return
	}
	r.session.before(p.payload)
	r.session.toServer(p.payload) // in place: grows said it would not grow
	r.forwarded, r.failed = false, false
	cmd := p.payload[0]
	w, err := rawWrite(s.sfd, s.cin[:4+n])
	if err == syscall.EAGAIN {
		w, err = 0, nil
	}
	if err != nil {
		s.handBack(errServer{err, false})
		return
	}
	if w < 4+n {
		s.cmdOut = append([]byte(nil), s.cin[w:4+n]...)
	}
	copy(s.cin, s.cin[4+n:s.cinN])
	s.cinN -= 4 + n
	s.answer.reset(r, cmd)
	s.awaiting = true
	r.loops.commands.Add(1)
}

// finish ends a relayed command as relay.command does.
func (s *loopSession) finish() {
	r := s.r
	s.awaiting = false
	r.held = nil
	r.session.after(!r.failed)
	if !r.inTransaction() {
		r.releaseAdmission()
	}
}

// The loop's system calls never block (its descriptors are
// non-blocking, and it polls its epoll set without waiting), so they are
// made raw: Go's scheduler is not told of them. A call made through
// syscall.Syscall marks the goroutine's processor as in a system call;
// when the machine is busy, a write that wakes the peer often runs long
// enough for the scheduler's monitor to hand that processor to another
// thread, and the loop then waits for one on return. That cost more
// context switches per query than the relay itself made (perf stat -e
// context-switches: 3.2 per query against HAProxy's 2.55).

// rawWrite and rawRead are one non-blocking system call each (EINTR
// retried).
func rawWrite(fd int, b []byte) (int, error) { return rawIO(syscall.SYS_WRITE, fd, b) }
func rawRead(fd int, b []byte) (int, error)  { return rawIO(syscall.SYS_READ, fd, b) }

func rawIO(trap uintptr, fd int, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	for {
		n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if e == syscall.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// epollPoll takes the ready events of the set epfd without waiting.
func epollPoll(epfd int, events []syscall.EpollEvent) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}
