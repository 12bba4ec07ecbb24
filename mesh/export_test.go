package mesh

import "net"

// WithNetResolver makes the mesh's DNS discovery ask r instead of the
// system's resolver, so tests can run their own DNS server on loopback.
func WithNetResolver(r *net.Resolver) Option {
	return optionFunc(func(c *config) error {
		c.netResolver = r
		return nil
	})
}
