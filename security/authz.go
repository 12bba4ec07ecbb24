package security

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/weftmesh/weft/internal/jwt"
	"github.com/weftmesh/weft/internal/rbac"
	"github.com/weftmesh/weft/internal/suggest"
)

// Limits on one policy file. Every request is judged against every rule,
// so the rule count bounds the cost of a decision: 9,999 documents of 10
// rules each cost 35 ms a request. A real mesh's policies for one workload
// are a few dozen.
const (
	// maxPolicyDocuments bounds how many YAML documents the file holds.
	maxPolicyDocuments = 1000
	// maxPolicyRules bounds the rules (spec.rules entries) of all its
	// documents together.
	maxPolicyRules = 10000
)

// Policy actions (spec.action).
const (
	actionAllow = "ALLOW"
	actionDeny  = "DENY"
	actionAudit = "AUDIT"
)

// PolicySet is a parsed, immutable set of Istio AuthorizationPolicies.
// Evaluate follows Istio's order: DENY policies first (any match denies);
// then, if any ALLOW policy exists, the request must match one; with no
// ALLOW policy it is allowed. AUDIT policies never change the outcome, they
// mark the decision.
//
// A PolicySet is safe for concurrent use. The zero PolicySet (and a nil
// *PolicySet) holds no policies and allows every request.
type PolicySet struct {
	allow, deny, audit []*policy
	engine             rbac.Engine // the policies, translated (authz_rbac.go)

	// authn are the RequestAuthentication documents; providers and
	// requirement their translation (authn.go), nil without any.
	authn       []*requestAuthn
	providers   []*jwt.Provider
	requirement *jwt.Requirement
	authOnce    sync.Once
	auth        *jwt.Authenticator // inline key sets only (AuthenticateRequest)
}

// PolicyEvaluator decides requests. *PolicySet and *PolicyWatcher implement
// it. Evaluate must be safe for concurrent use and must not block.
type PolicyEvaluator interface {
	Evaluate(r *Request) Decision
}

var (
	_ PolicyEvaluator = (*PolicySet)(nil)
	_ PolicyEvaluator = (*PolicyWatcher)(nil)
)

type policy struct {
	name  string // "namespace/name", or "#<document>" without a name
	rules []*rule
	scope policyScope
}

// policyScope is which workloads a policy applies to, from its namespace,
// spec.selector and spec.targetRefs.
type policyScope struct {
	namespace  string
	selector   map[string]string // nil: no selector
	targetRefs []targetRefDoc
}

type rule struct {
	from []*sourceMatch
	to   []*operationMatch
	when []*condition
}

type sourceMatch struct {
	principals, notPrincipals []strMatch
	// requestPrincipals are Istio's "<iss>/<sub>" values, translated
	// with istiod's own splitting (authz_rbac.go).
	requestPrincipals, notRequestPrincipals []string
	namespaces, notNamespaces               []strMatch
	ipBlocks, notIPBlocks                   []netip.Prefix
	remoteIPBlocks, notRemoteIPBlocks       []netip.Prefix
}

type operationMatch struct {
	hosts, notHosts     []strMatch
	methods, notMethods []strMatch
	paths, notPaths     []strMatch
	ports, notPorts     []uint16
}

type condKind uint8

const (
	condHeader condKind = iota + 1
	condSourceIP
	condSourceNamespace
	condSourcePrincipal
	condDestinationPort
	condRequestPrincipal
	// condJWTClaim: request.auth.claims[...], request.auth.audiences
	// (claim aud) and request.auth.presenter (claim azp).
	condJWTClaim
)

type condition struct {
	kind              condKind
	header            string // canonical header name for condHeader
	values, notValues []strMatch
	ips, notIPs       []netip.Prefix
	ports, notPorts   []uint16
	claim             []string // condJWTClaim: the claim's path
	raw, notRaw       []string // condRequestPrincipal
}

// The YAML shape of an AuthorizationPolicy (security.istio.io/v1).
type policyDoc struct {
	APIVersion string         `yaml:"apiVersion"`
	Kind       string         `yaml:"kind"`
	Metadata   metadataDoc    `yaml:"metadata"`
	Spec       specDoc        `yaml:"spec"`
	Status     map[string]any `yaml:"status"`
}

type metadataDoc struct {
	Name      string         `yaml:"name"`
	Namespace string         `yaml:"namespace"`
	Rest      map[string]any `yaml:",inline"`
}

type specDoc struct {
	Selector   *selectorDoc   `yaml:"selector"`
	TargetRef  *targetRefDoc  `yaml:"targetRef"`
	TargetRefs []targetRefDoc `yaml:"targetRefs"`
	Action     string         `yaml:"action"`
	Provider   map[string]any `yaml:"provider"`
	Rules      []ruleDoc      `yaml:"rules"`
	// JWTRules are a RequestAuthentication's (authn.go).
	JWTRules []jwtRuleDoc `yaml:"jwtRules"`
}

// selectorDoc is Istio's WorkloadSelector.
type selectorDoc struct {
	MatchLabels map[string]string `yaml:"matchLabels"`
}

// targetRefDoc is Istio's PolicyTargetReference.
type targetRefDoc struct {
	Group     string `yaml:"group"`
	Kind      string `yaml:"kind"`
	Name      string `yaml:"name"`
	Namespace string `yaml:"namespace"`
}

type ruleDoc struct {
	From []fromDoc      `yaml:"from"`
	To   []toDoc        `yaml:"to"`
	When []conditionDoc `yaml:"when"`
}

type fromDoc struct {
	Source *sourceDoc `yaml:"source"`
}

type toDoc struct {
	Operation *operationDoc `yaml:"operation"`
}

type sourceDoc struct {
	Principals           []string `yaml:"principals"`
	NotPrincipals        []string `yaml:"notPrincipals"`
	RequestPrincipals    []string `yaml:"requestPrincipals"`
	NotRequestPrincipals []string `yaml:"notRequestPrincipals"`
	Namespaces           []string `yaml:"namespaces"`
	NotNamespaces        []string `yaml:"notNamespaces"`
	IPBlocks             []string `yaml:"ipBlocks"`
	NotIPBlocks          []string `yaml:"notIpBlocks"`
	RemoteIPBlocks       []string `yaml:"remoteIpBlocks"`
	NotRemoteIPBlocks    []string `yaml:"notRemoteIpBlocks"`
	ServiceAccounts      []string `yaml:"serviceAccounts"`
	NotServiceAccounts   []string `yaml:"notServiceAccounts"`
}

type operationDoc struct {
	Hosts      []string `yaml:"hosts"`
	NotHosts   []string `yaml:"notHosts"`
	Ports      []string `yaml:"ports"`
	NotPorts   []string `yaml:"notPorts"`
	Methods    []string `yaml:"methods"`
	NotMethods []string `yaml:"notMethods"`
	Paths      []string `yaml:"paths"`
	NotPaths   []string `yaml:"notPaths"`
}

type conditionDoc struct {
	Key       string   `yaml:"key"`
	Values    []string `yaml:"values"`
	NotValues []string `yaml:"notValues"`
}

// ParseAuthorizationPolicies parses one or more Istio AuthorizationPolicy
// documents (YAML, separated by "---"; empty documents are skipped) of
// apiVersion security.istio.io/v1 or v1beta1.
//
// Supported: actions ALLOW (the default), DENY and AUDIT; from.source
// principals, requestPrincipals, namespaces, ipBlocks and remoteIpBlocks
// with their not- forms; to.operation hosts, ports, methods and paths with
// their not- forms; when conditions on request.headers[NAME], source.ip,
// remote.ip, source.namespace, source.principal, destination.port,
// request.auth.principal, request.auth.audiences, request.auth.presenter
// and request.auth.claims[NAME] (nested: [NAME][NESTED]).
//
// RequestAuthentication documents (security.istio.io/v1) in the same data
// declare the JWT issuers whose tokens the request.auth fields read: their
// jwtRules' issuer, audiences, jwksUri or inline jwks, fromHeaders,
// fromParams, fromCookies, forwardOriginalToken, timeout and
// spaceDelimitedClaims. A [RequestAuthenticator] ([AuthenticationHandler],
// or [AuthorizationHandler] itself) validates the tokens before Evaluate. The caller's
// address is both its source and its remote IP: no proxy stands between a
// proxyless server and its callers. Principals use Istio's form without
// "spiffe://" ("cluster.local/ns/default/sa/web"; a "spiffe://" prefix is
// tolerated and dropped), and string values may use one "*" as a prefix or
// suffix wildcard, or be "*" alone. Fields Weft cannot enforce (the CUSTOM
// action, serviceAccounts, a jwtRule's outputs to headers) and unknown
// fields are errors, so a policy is never silently weakened.
//
// The policies are translated into RBAC as istiod translates them for
// Envoy, and evaluated by the engine that evaluates the RBAC filters of an
// xDS control plane, with Envoy's meaning: a header sent several times is
// matched on its values joined with ",", request.headers[:method] and
// [host] are the request's method and authority, and namespaces match
// istiod's ".*/ns/<namespace>/.*" on the SPIFFE ID. Hosts match the
// authority with and without its port.
//
// An error names the document (counting from 1) and the field.
func ParseAuthorizationPolicies(data []byte) (*PolicySet, error) {
	return parseAuthorizationPolicies(data, "")
}

// parseAuthorizationPolicies is ParseAuthorizationPolicies whose errors
// name file (when not empty) and, for YAML errors, the line.
func parseAuthorizationPolicies(data []byte, file string) (*PolicySet, error) {
	where := "security: "
	if file != "" {
		where = "security: policy file " + file + ": "
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	set := &PolicySet{}
	docs, rules := 0, 0
	for n := 1; ; n++ {
		if n > 2*maxPolicyDocuments {
			// Empty documents cost nothing to judge but time to parse.
			return nil, fmt.Errorf("%sauthorization policies: more than %d YAML documents, empty ones included (the limit)", where, 2*maxPolicyDocuments)
		}
		var doc policyDoc
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return set.compile(), nil
		}
		if err != nil {
			return nil, yamlError(where, n, err)
		}
		if reflect.ValueOf(doc).IsZero() {
			continue
		}
		if docs++; docs > maxPolicyDocuments {
			return nil, fmt.Errorf("%sauthorization policy document %d%s: more than %d documents (the limit)",
				where, n, docName(&doc), maxPolicyDocuments)
		}
		if rules += len(doc.Spec.Rules) + len(doc.Spec.JWTRules); rules > maxPolicyRules {
			return nil, fmt.Errorf("%sauthorization policy document %d%s: more than %d rules in all documents (the limit)",
				where, n, docName(&doc), maxPolicyRules)
		}
		if doc.Kind == "RequestAuthentication" {
			ra, err := compileRequestAuthn(n, &doc)
			if err != nil {
				return nil, fmt.Errorf("%srequest authentication document %d%s: %w", where, n, docName(&doc), err)
			}
			set.authn = append(set.authn, ra)
			continue
		}
		p, action, err := compilePolicy(n, &doc)
		if err != nil {
			return nil, fmt.Errorf("%sauthorization policy document %d%s: %w", where, n, docName(&doc), err)
		}
		switch action {
		case actionAllow:
			set.allow = append(set.allow, p)
		case actionDeny:
			set.deny = append(set.deny, p)
		case actionAudit:
			set.audit = append(set.audit, p)
		}
	}
}

// empty reports whether s holds no policy at all.
func (s *PolicySet) empty() bool {
	return s == nil || len(s.allow)+len(s.deny)+len(s.audit)+len(s.authn) == 0
}

// yamlFieldError is how yaml.v3 words an unknown field under KnownFields.
var yamlFieldError = regexp.MustCompile(`^line (\d+): field (.+) not found in type security\.(\w+)$`)

// yamlLineError is how yaml.v3 words its other errors.
var yamlLineError = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// docFields describes, for each YAML shape of a policy, where it sits in
// a document and which fields it takes, so that an unknown field is named
// by its line and the field meant.
var docFields = func() map[string]struct {
	path  string
	known []string
} {
	out := map[string]struct {
		path  string
		known []string
	}{}
	for path, v := range map[string]any{
		"":                              policyDoc{},
		"metadata":                      metadataDoc{},
		"spec":                          specDoc{},
		"spec.selector":                 selectorDoc{},
		"spec.jwtRules[]":               jwtRuleDoc{},
		"spec.jwtRules[].fromHeaders[]": jwtHeaderDoc{},
		"spec.targetRefs[]":             targetRefDoc{},
		"spec.rules[]":                  ruleDoc{},
		"spec.rules[].from[]":           fromDoc{},
		"spec.rules[].to[]":             toDoc{},
		"rules[].from[].source":         sourceDoc{},
		"rules[].to[].operation":        operationDoc{},
		"spec.rules[].when[]":           conditionDoc{},
	} {
		t := reflect.TypeOf(v)
		var known []string
		for i := range t.NumField() {
			if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" {
				known = append(known, name)
			}
		}
		out[t.Name()] = struct {
			path  string
			known []string
		}{path, known}
	}
	return out
}()

// yamlError rewords a YAML decoding error of document n: each of its
// messages names the line, and an unknown field names the place it was
// found and the field most likely meant ("principal" for "principals").
func yamlError(where string, n int, err error) error {
	var msgs []string
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	out := make([]string, 0, len(msgs))
	for _, m := range msgs {
		if f := yamlFieldError.FindStringSubmatch(m); f != nil {
			if d, ok := docFields[f[3]]; ok {
				at := ""
				if d.path != "" {
					at = " in " + d.path
				}
				m = fmt.Sprintf("line %s: %s%s", f[1], suggest.Unknown("field", f[2], d.known, false), at)
			}
		} else if l := yamlLineError.FindStringSubmatch(m); l != nil {
			m = "line " + l[1] + ": " + l[2]
		}
		out = append(out, m)
	}
	return fmt.Errorf("%sauthorization policy document %d: %s", where, n, strings.Join(out, "; "))
}

func docName(doc *policyDoc) string {
	switch {
	case doc.Metadata.Name == "":
		return ""
	case doc.Metadata.Namespace == "":
		return " (" + doc.Metadata.Name + ")"
	}
	return " (" + doc.Metadata.Namespace + "/" + doc.Metadata.Name + ")"
}

func compilePolicy(n int, doc *policyDoc) (*policy, string, error) {
	switch doc.APIVersion {
	case "security.istio.io/v1", "security.istio.io/v1beta1":
	default:
		return nil, "", fmt.Errorf("apiVersion: %q is not security.istio.io/v1 or v1beta1", doc.APIVersion)
	}
	if doc.Kind != "AuthorizationPolicy" {
		return nil, "", fmt.Errorf("kind: %q is not AuthorizationPolicy or RequestAuthentication", doc.Kind)
	}
	if len(doc.Spec.JWTRules) > 0 {
		return nil, "", errors.New("spec.jwtRules: a RequestAuthentication field, not an AuthorizationPolicy's")
	}
	action := doc.Spec.Action
	switch action {
	case "":
		action = actionAllow
	case actionAllow, actionDeny, actionAudit:
	case "CUSTOM":
		return nil, "", errors.New("spec.action: CUSTOM (external authorization) is not supported")
	default:
		return nil, "", fmt.Errorf("spec.action: unknown action %q (want ALLOW, DENY or AUDIT)", action)
	}
	if doc.Spec.Provider != nil {
		return nil, "", errors.New("spec.provider: only valid with the CUSTOM action, which is not supported")
	}
	scope, err := compileScope(doc)
	if err != nil {
		return nil, "", err
	}
	p := &policy{name: policyName(n, doc), scope: scope}
	for i := range doc.Spec.Rules {
		r, err := compileRule(&doc.Spec.Rules[i])
		if err != nil {
			return nil, "", fmt.Errorf("spec.rules[%d].%w", i, err)
		}
		p.rules = append(p.rules, r)
	}
	return p, action, nil
}

// policyName is "namespace/name", or "#<n>" for an unnamed document.
func policyName(n int, doc *policyDoc) string {
	name := strings.TrimPrefix(docName(doc), " ")
	if name == "" {
		return "#" + strconv.Itoa(n)
	}
	return strings.Trim(name, "()")
}

func compileScope(doc *policyDoc) (policyScope, error) {
	sc := policyScope{namespace: doc.Metadata.Namespace}
	refs := doc.Spec.TargetRefs
	if doc.Spec.TargetRef != nil {
		if len(refs) > 0 {
			return sc, errors.New("spec.targetRef: set together with spec.targetRefs")
		}
		refs = []targetRefDoc{*doc.Spec.TargetRef}
	}
	if doc.Spec.Selector != nil && len(refs) > 0 {
		return sc, errors.New("spec.selector: set together with spec.targetRefs; Istio allows only one")
	}
	if doc.Spec.Selector != nil {
		sc.selector = doc.Spec.Selector.MatchLabels
		if sc.selector == nil {
			sc.selector = map[string]string{}
		}
	}
	for i, r := range refs {
		if r.Kind == "" || r.Name == "" {
			return sc, fmt.Errorf("spec.targetRefs[%d]: kind and name are required", i)
		}
		if r.Namespace != "" && r.Namespace != doc.Metadata.Namespace {
			return sc, fmt.Errorf("spec.targetRefs[%d].namespace: %q differs from the policy's namespace %q", i, r.Namespace, doc.Metadata.Namespace)
		}
	}
	sc.targetRefs = refs
	return sc, nil
}

var errEmptyMatch = errors.New("must not be empty")

// fieldError is an error located at a field path relative to the caller.
func fieldError(field string, err error) error { return fmt.Errorf("%s: %w", field, err) }

func compileRule(rd *ruleDoc) (*rule, error) {
	r := &rule{}
	for i, f := range rd.From {
		if f.Source == nil {
			return nil, fieldError(fmt.Sprintf("from[%d].source", i), errors.New("must be set"))
		}
		s, err := compileSource(f.Source)
		if errors.Is(err, errEmptyMatch) {
			return nil, fieldError(fmt.Sprintf("from[%d].source", i), err)
		}
		if err != nil {
			return nil, fmt.Errorf("from[%d].source.%w", i, err)
		}
		r.from = append(r.from, s)
	}
	for i, t := range rd.To {
		if t.Operation == nil {
			return nil, fieldError(fmt.Sprintf("to[%d].operation", i), errors.New("must be set"))
		}
		o, err := compileOperation(t.Operation)
		if errors.Is(err, errEmptyMatch) {
			return nil, fieldError(fmt.Sprintf("to[%d].operation", i), err)
		}
		if err != nil {
			return nil, fmt.Errorf("to[%d].operation.%w", i, err)
		}
		r.to = append(r.to, o)
	}
	for i := range rd.When {
		c, err := compileCondition(&rd.When[i])
		if err != nil {
			return nil, fmt.Errorf("when[%d].%w", i, err)
		}
		r.when = append(r.when, c)
	}
	return r, nil
}

func compileSource(sd *sourceDoc) (*sourceMatch, error) {
	unsupported := []struct {
		field string
		v     []string
	}{
		{"serviceAccounts", sd.ServiceAccounts},
		{"notServiceAccounts", sd.NotServiceAccounts},
	}
	for _, u := range unsupported {
		if len(u.v) > 0 {
			return nil, fieldError(u.field, errors.New("not supported"))
		}
	}
	s := &sourceMatch{}
	var err error
	if s.requestPrincipals, err = checkValues("requestPrincipals", sd.RequestPrincipals); err != nil {
		return nil, err
	}
	if s.notRequestPrincipals, err = checkValues("notRequestPrincipals", sd.NotRequestPrincipals); err != nil {
		return nil, err
	}
	if s.principals, err = compileStrings("principals", sd.Principals, trimSPIFFE); err != nil {
		return nil, err
	}
	if s.notPrincipals, err = compileStrings("notPrincipals", sd.NotPrincipals, trimSPIFFE); err != nil {
		return nil, err
	}
	if s.namespaces, err = compileStrings("namespaces", sd.Namespaces, nil); err != nil {
		return nil, err
	}
	if s.notNamespaces, err = compileStrings("notNamespaces", sd.NotNamespaces, nil); err != nil {
		return nil, err
	}
	if s.ipBlocks, err = compilePrefixes("ipBlocks", sd.IPBlocks); err != nil {
		return nil, err
	}
	if s.notIPBlocks, err = compilePrefixes("notIpBlocks", sd.NotIPBlocks); err != nil {
		return nil, err
	}
	if s.remoteIPBlocks, err = compilePrefixes("remoteIpBlocks", sd.RemoteIPBlocks); err != nil {
		return nil, err
	}
	if s.notRemoteIPBlocks, err = compilePrefixes("notRemoteIpBlocks", sd.NotRemoteIPBlocks); err != nil {
		return nil, err
	}
	if reflect.ValueOf(*s).IsZero() {
		return nil, errEmptyMatch
	}
	return s, nil
}

func compileOperation(od *operationDoc) (*operationMatch, error) {
	o := &operationMatch{}
	var err error
	if o.hosts, err = compileStrings("hosts", od.Hosts, strings.ToLower); err != nil {
		return nil, err
	}
	if o.notHosts, err = compileStrings("notHosts", od.NotHosts, strings.ToLower); err != nil {
		return nil, err
	}
	if o.methods, err = compileStrings("methods", od.Methods, nil); err != nil {
		return nil, err
	}
	if o.notMethods, err = compileStrings("notMethods", od.NotMethods, nil); err != nil {
		return nil, err
	}
	if o.paths, err = compilePaths("paths", od.Paths); err != nil {
		return nil, err
	}
	if o.notPaths, err = compilePaths("notPaths", od.NotPaths); err != nil {
		return nil, err
	}
	if o.ports, err = compilePorts("ports", od.Ports); err != nil {
		return nil, err
	}
	if o.notPorts, err = compilePorts("notPorts", od.NotPorts); err != nil {
		return nil, err
	}
	if reflect.ValueOf(*o).IsZero() {
		return nil, errEmptyMatch
	}
	return o, nil
}

func compileCondition(cd *conditionDoc) (*condition, error) {
	if len(cd.Values) == 0 && len(cd.NotValues) == 0 {
		return nil, fieldError("values", fmt.Errorf("one of values or notValues must be set for key %q", cd.Key))
	}
	c := &condition{}
	var err error
	key := cd.Key
	switch {
	case strings.HasPrefix(key, "request.headers[") && strings.HasSuffix(key, "]"):
		name := key[len("request.headers[") : len(key)-1]
		if name == "" || strings.ContainsAny(name, " \t[]") {
			return nil, fieldError("key", fmt.Errorf("bad header name in %q", key))
		}
		c.kind, c.header = condHeader, http.CanonicalHeaderKey(name)
		if c.values, err = compileStrings("values", cd.Values, nil); err != nil {
			return nil, err
		}
		c.notValues, err = compileStrings("notValues", cd.NotValues, nil)
	case key == "source.ip", key == "remote.ip":
		c.kind = condSourceIP
		if c.ips, err = compilePrefixes("values", cd.Values); err != nil {
			return nil, err
		}
		c.notIPs, err = compilePrefixes("notValues", cd.NotValues)
	case key == "source.namespace":
		c.kind = condSourceNamespace
		if c.values, err = compileStrings("values", cd.Values, nil); err != nil {
			return nil, err
		}
		c.notValues, err = compileStrings("notValues", cd.NotValues, nil)
	case key == "source.principal":
		c.kind = condSourcePrincipal
		if c.values, err = compileStrings("values", cd.Values, trimSPIFFE); err != nil {
			return nil, err
		}
		c.notValues, err = compileStrings("notValues", cd.NotValues, trimSPIFFE)
	case key == "request.auth.principal":
		c.kind = condRequestPrincipal
		if c.raw, err = checkValues("values", cd.Values); err != nil {
			return nil, err
		}
		c.notRaw, err = checkValues("notValues", cd.NotValues)
	case key == "request.auth.audiences", key == "request.auth.presenter", strings.HasPrefix(key, "request.auth.claims"):
		c.kind = condJWTClaim
		switch key {
		case "request.auth.audiences":
			c.claim = []string{"aud"}
		case "request.auth.presenter":
			c.claim = []string{"azp"}
		default:
			if c.claim, err = claimPath(key); err != nil {
				return nil, fieldError("key", err)
			}
		}
		if c.values, err = compileStrings("values", cd.Values, nil); err != nil {
			return nil, err
		}
		c.notValues, err = compileStrings("notValues", cd.NotValues, nil)
	case key == "destination.port":
		c.kind = condDestinationPort
		if c.ports, err = compilePorts("values", cd.Values); err != nil {
			return nil, err
		}
		c.notPorts, err = compilePorts("notValues", cd.NotValues)
	default:
		return nil, fieldError("key", fmt.Errorf("unsupported condition key %q", key))
	}
	if err != nil {
		return nil, err
	}
	return c, nil
}

// claimPath parses "request.auth.claims[a][b]" into [a b], as istiod
// does: at least one bracketed, non-empty name, nothing else.
func claimPath(key string) ([]string, error) {
	rest := strings.TrimPrefix(key, "request.auth.claims")
	var out []string
	for rest != "" {
		end := strings.IndexByte(rest, ']')
		if rest[0] != '[' || end < 2 || strings.ContainsAny(rest[1:end], "[") {
			return nil, fmt.Errorf("bad claim name in %q: want request.auth.claims[name] or [name][nested]", key)
		}
		out = append(out, rest[1:end])
		rest = rest[end+1:]
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no claim named in %q", key)
	}
	return out, nil
}

// checkValues refuses empty values.
func checkValues(field string, vals []string) ([]string, error) {
	for i, v := range vals {
		if v == "" {
			return nil, fieldError(fmt.Sprintf("%s[%d]", field, i), errors.New("empty value"))
		}
	}
	return vals, nil
}

func trimSPIFFE(s string) string { return strings.TrimPrefix(s, "spiffe://") }

func compileStrings(field string, vals []string, transform func(string) string) ([]strMatch, error) {
	var out []strMatch
	for i, v := range vals {
		if transform != nil {
			v = transform(v)
		}
		m, err := newStrMatch(v)
		if err != nil {
			return nil, fieldError(fmt.Sprintf("%s[%d]", field, i), err)
		}
		out = append(out, m)
	}
	return out, nil
}

func compilePaths(field string, vals []string) ([]strMatch, error) {
	for i, v := range vals {
		if strings.ContainsAny(v, "{}") {
			return nil, fieldError(fmt.Sprintf("%s[%d]", field, i), fmt.Errorf("path templates are not supported in %q", v))
		}
		if v != "*" && !strings.HasPrefix(v, "/") && !strings.HasPrefix(v, "*") {
			return nil, fieldError(fmt.Sprintf("%s[%d]", field, i), fmt.Errorf("path %q must start with / or *", v))
		}
	}
	return compileStrings(field, vals, nil)
}

func compilePrefixes(field string, vals []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for i, v := range vals {
		var p netip.Prefix
		var err error
		if strings.Contains(v, "/") {
			p, err = netip.ParsePrefix(v)
			p = p.Masked()
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(v)
			if err == nil {
				p = netip.PrefixFrom(a, a.BitLen())
			}
		}
		if err != nil {
			return nil, fieldError(fmt.Sprintf("%s[%d]", field, i), fmt.Errorf("not an IP address or CIDR block: %q", v))
		}
		out = append(out, p)
	}
	return out, nil
}

func compilePorts(field string, vals []string) ([]uint16, error) {
	var out []uint16
	for i, v := range vals {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil || n == 0 {
			return nil, fieldError(fmt.Sprintf("%s[%d]", field, i), fmt.Errorf("not a port number: %q", v))
		}
		out = append(out, uint16(n))
	}
	return out, nil
}

type matchKind uint8

const (
	matchExact matchKind = iota
	matchPrefix
	matchSuffix
	matchAny
)

// strMatch is Istio's string match: exact, "prefix*", "*suffix" or "*".
type strMatch struct {
	kind matchKind
	s    string
}

func newStrMatch(v string) (strMatch, error) {
	switch {
	case v == "":
		return strMatch{}, errors.New("empty value")
	case v == "*":
		return strMatch{kind: matchAny}, nil
	case strings.Count(v, "*") > 1:
		return strMatch{}, fmt.Errorf("more than one wildcard in %q", v)
	case strings.HasSuffix(v, "*"):
		return strMatch{kind: matchPrefix, s: v[:len(v)-1]}, nil
	case strings.HasPrefix(v, "*"):
		return strMatch{kind: matchSuffix, s: v[1:]}, nil
	case strings.Contains(v, "*"):
		return strMatch{}, fmt.Errorf("wildcard in the middle of %q", v)
	}
	return strMatch{kind: matchExact, s: v}, nil
}
