package security

import (
	"context"
	"maps"

	"github.com/weftmesh/weft/internal/jwt"
)

// RequestPrincipal returns, inside a handler served by the mesh (or
// behind [AuthorizationHandler] and the gRPC interceptors), the request
// principal of the caller's JSON Web Token: "<iss>/<sub>", what Istio's
// requestPrincipals match. ok is false when the request carried no token
// that a RequestAuthentication (from the policy file or the control
// plane's jwt_authn filter) verified. A request with an invalid token
// never reaches the handler: it is refused with 401 (gRPC UNAUTHENTICATED).
func RequestPrincipal(ctx context.Context) (principal string, ok bool) {
	r, _ := jwt.FromContext(ctx)
	if v := r.First(); v != nil {
		return v.Principal(), true
	}
	return "", false
}

// RequestClaims returns the claims of the verified token of
// [RequestPrincipal], as JSON decodes them (strings, float64 numbers,
// bools, []any, map[string]any). The map is a copy the caller may keep.
func RequestClaims(ctx context.Context) (claims map[string]any, ok bool) {
	r, _ := jwt.FromContext(ctx)
	if v := r.First(); v != nil {
		return maps.Clone(v.Claims), true
	}
	return nil, false
}
