//lint:file-ignore SA1019 istiod writes requestPrincipals and request.auth.* as the deprecated metadata matchers

package xdstest

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/emptypb"
)

// JWTFilter returns the jwt_authn HTTP filter with cfg.
func JWTFilter(cfg *jwtv3.JwtAuthentication) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.jwt_authn", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(cfg)}}
}

// IstioJWT is the jwt_authn config istiod builds for one RequestAuthentication
// rule (pilot/pkg/security/authn convertToEnvoyJwtConfig): provider
// "origins-0" with the payload in metadata under "payload", a remote JWKS
// when jwksURI is set (else jwks inline), and the rule
// requires_any(origins-0, allow_missing) for every path.
func IstioJWT(issuer string, audiences []string, jwksURI string, jwks []byte) *jwtv3.JwtAuthentication {
	p := &jwtv3.JwtProvider{Issuer: issuer, Audiences: audiences, PayloadInMetadata: "payload",
		NormalizePayloadInMetadata: &jwtv3.JwtProvider_NormalizePayload{SpaceDelimitedClaims: []string{"scope", "permission"}}}
	if jwksURI != "" {
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri:       &corev3.HttpUri{Uri: jwksURI, HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "outbound|443||jwks"}, Timeout: durationpb.New(5 * time.Second)},
			CacheDuration: durationpb.New(5 * time.Minute),
		}}
	} else {
		p.JwksSourceSpecifier = &jwtv3.JwtProvider_LocalJwks{LocalJwks: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(jwks)}}}
	}
	return &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"origins-0": p},
		Rules: []*jwtv3.RequirementRule{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_RequiresAny{
				RequiresAny: &jwtv3.JwtRequirementOrList{Requirements: []*jwtv3.JwtRequirement{
					{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "origins-0"}},
					{RequiresType: &jwtv3.JwtRequirement_AllowMissing{AllowMissing: &emptypb.Empty{}}},
				}},
			}}},
		}},
		BypassCorsPreflight: true,
	}
}

// jwtClaim is istiod's metadata matcher for a claim path
// (MetadataStringMatcherForJWTClaim).
func jwtClaim(claim string, m *matcherv3.StringMatcher) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.jwt_authn",
		Path: []*matcherv3.MetadataMatcher_PathSegment{
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}},
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: claim}},
		},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: m}},
	}}}
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

// RequestPrincipal is istiod's principal for requestPrincipals: [iss/sub]:
// and(payload.iss == iss, payload.sub == sub).
func RequestPrincipal(iss, sub string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
		jwtClaim("iss", exact(iss)), jwtClaim("sub", exact(sub)),
	}}}}
}

// RequestClaim is istiod's principal for
// "when: request.auth.claims[claim] values: [value]": the claim as a list
// containing value, or equal to it (MetadataListValueMatcher with
// useExtendedJwt).
func RequestClaim(claim, value string) *rbacv3.Principal {
	v := &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_StringMatch{StringMatch: exact(value)}}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Metadata{Metadata: &matcherv3.MetadataMatcher{
		Filter: "envoy.filters.http.jwt_authn",
		Path: []*matcherv3.MetadataMatcher_PathSegment{
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: "payload"}},
			{Segment: &matcherv3.MetadataMatcher_PathSegment_Key{Key: claim}},
		},
		Value: &matcherv3.ValueMatcher{MatchPattern: &matcherv3.ValueMatcher_OrMatch{OrMatch: &matcherv3.OrMatcher{ValueMatchers: []*matcherv3.ValueMatcher{
			{MatchPattern: &matcherv3.ValueMatcher_ListMatch{ListMatch: &matcherv3.ListMatcher{MatchPattern: &matcherv3.ListMatcher_OneOf{OneOf: v}}}},
			v,
		}}}},
	}}}
}
