package sites

import (
	"fmt"
	"time"
)

// Failures says, for each started site whose processes are failing here,
// why: the app's last run ended badly and it has not accepted connections
// since, or its mariadbd's last start failed. A site that is up, or whose
// processes have not been asked for yet, is not in it. The node reports it
// with the site (hcctl site show), so that a site the cluster calls active
// but that cannot serve is visible where operators look.
func (s *Supervisor) Failures() map[string]string {
	out := map[string]string{}
	s.mu.Lock()
	states := make([]*siteState, 0, len(s.sites))
	for _, st := range s.sites {
		states = append(states, st)
	}
	s.mu.Unlock()
	for _, st := range states {
		st.mu.Lock()
		if st.started && st.failure != "" {
			out[st.name] = failureText("app", st.failure, st.failingSince, st.failures)
		}
		st.mu.Unlock()
	}
	if s.mysql == nil {
		return out
	}
	for _, ms := range s.mysql.all() {
		ms.mu.Lock()
		if ms.started && ms.startErr != nil {
			text := failureText("mariadbd", "start: "+ms.startErr.Error(), ms.failingSince, ms.failures)
			if app, ok := out[ms.name]; ok {
				text = app + "; " + text
			}
			out[ms.name] = text
		}
		ms.mu.Unlock()
	}
	return out
}

// failureTextMax bounds one failure's text (a process's error can quote
// its whole command line); longer ones are cut.
const failureTextMax = 400

func failureText(what, why string, since time.Time, n int) string {
	if len(why) > failureTextMax {
		why = why[:failureTextMax] + "..."
	}
	return fmt.Sprintf("%s %s (%d failures since %s)", what, why, n, since.UTC().Format(time.RFC3339))
}
