package lockmgr

// Test-only views of a Manager's line for a resource, so that tests can
// take their next step once a caller is surely queued or registered,
// instead of sleeping and hoping.

// Waiting is how many Acquire calls of m wait in line for resource.
func Waiting(m *Manager, resource string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if ln := m.lines[resource]; ln != nil {
		return len(ln.waiters)
	}
	return 0
}

// Registered reports whether releases of resource now notify m.
func Registered(m *Manager, resource string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	ln := m.lines[resource]
	return ln != nil && ln.registered
}

// ListenerConnects is how many times m's listener has connected and woken
// the heads (Manager.listening): after it, that wake-up is counted.
func ListenerConnects(m *Manager) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.connects
}
