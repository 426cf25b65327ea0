//go:build linux

package mysql

import "testing"

// TestLoopsFor: one loop per processorsPerLoop processors, at least one,
// at most loopsMax.
func TestLoopsFor(t *testing.T) {
	for _, c := range []struct{ procs, want int }{
		{1, 1}, {2, 1}, {processorsPerLoop - 1, 1}, {processorsPerLoop, 1},
		{2 * processorsPerLoop, 2}, {loopsMax * processorsPerLoop, loopsMax}, {1024, loopsMax},
	} {
		if got := loopsFor(c.procs); got != c.want {
			t.Errorf("loopsFor(%d) = %d, want %d", c.procs, got, c.want)
		}
	}
}
