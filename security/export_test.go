package security

import (
	"crypto/x509"
	"weak"
)

// LeafIDCached reports whether PeerIDFromTLS's cache holds an entry for
// the certificate leaf points to, collected or not.
func LeafIDCached(leaf weak.Pointer[x509.Certificate]) bool {
	leafIDs.RLock()
	defer leafIDs.RUnlock()
	_, ok := leafIDs.m[leaf]
	return ok
}
