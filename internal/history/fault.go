package history

// Fault is one fault injected during a run, from its start to when it was
// healed, in seconds since the run began.
type Fault struct {
	Kind  string  `json:"fault"` // pause, kill, terminate, db-restart, failover, standby-down
	Node  string  `json:"node,omitempty"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	Error string  `json:"error,omitempty"` // the fault could not be injected
	// A pause's probe (bankctl's pause inside a lease): the tokens of the
	// frozen node's lease and of the lease taken while it was frozen, and
	// what its late write got.
	TokenFrozen int64  `json:"token_frozen,omitempty"`
	TokenNewer  int64  `json:"token_newer,omitempty"`
	LateWrite   string `json:"late_write,omitempty"` // "201" or the problem code
	// A failover (or standby-down): the database node killed (Node is
	// then that node), when the monitor had a new primary (0: none), and
	// what the monitor said along the way.
	Promoted float64 `json:"promoted,omitempty"`
	Detail   string  `json:"detail,omitempty"`
}
