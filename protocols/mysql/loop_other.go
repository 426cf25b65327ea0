//go:build !linux

package mysql

// eventLoops: no event loop outside Linux (epoll); every session is
// relayed by its goroutine.
type eventLoops struct{}

type eventLoop struct{}

func newEventLoops() *eventLoops { return nil }

func (ls *eventLoops) serve(*relay, int, int) (bool, error) { return false, nil }

func (ls *eventLoops) close() {}

// LoopCommands is how many commands the event loops relayed.
func (f *Front) LoopCommands() uint64 { return 0 }
