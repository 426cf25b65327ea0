package host

import (
	"io/fs"
	"syscall"
	"time"
)

// fileIdentity is a file's inode number and change time (which no user
// can set: a rewrite that puts the modification time back still moves it).
func fileIdentity(fi fs.FileInfo) (ino uint64, ctime time.Time) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino, time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return 0, time.Time{}
}
