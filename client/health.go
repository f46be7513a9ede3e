package client

import "context"

// Health is what /healthz says of a node.
type Health struct {
	Status string `json:"status"`
	// Node is the node's name: the holder name of the leases it takes.
	Node string `json:"node"`
}

// Health asks whether the node's process is up, and its name.
func (c *Client) Health(ctx context.Context, opts ...CallOption) (Health, error) {
	var h Health
	err := c.do(ctx, "GET", "/healthz", nil, nil, &h, newCall(opts))
	return h, err
}

// Ready returns nil while the node can serve: its database answers.
// Refusals: database_unavailable (503, with RetryAfter).
func (c *Client) Ready(ctx context.Context, opts ...CallOption) error {
	return c.do(ctx, "GET", "/readyz", nil, nil, nil, newCall(opts))
}
