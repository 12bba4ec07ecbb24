package balancer

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"
)

// configBuilder is the Builder of a policy whose picker depends only on the
// serving endpoints and the policy's settings, so that such a policy, like
// one made with NewPickerBuilder, is a parser and a picker constructor.
// It is immutable and safe for concurrent use.
type configBuilder[C any] struct {
	name string
	// parse reads the JSON settings; nil or empty JSON yields the defaults.
	parse func(json.RawMessage) (C, error)
	build func(cfg C, serving []*Endpoint) Picker
}

func (b configBuilder[C]) Name() string { return b.name }

// ParseConfig implements ConfigParser.
func (b configBuilder[C]) ParseConfig(js json.RawMessage) (any, error) {
	cfg, err := b.parse(js)
	if err != nil {
		return nil, fmt.Errorf("balancer: %s: %w", b.name, err)
	}
	return cfg, nil
}

// Build uses opts.Config when it is this policy's parsed configuration and
// the defaults otherwise (nil, as NewCluster documents, or a value parsed
// by another policy), since a Balancer cannot fail to build.
func (b configBuilder[C]) Build(opts BuildOptions) Balancer {
	cfg, ok := opts.Config.(C)
	if !ok {
		cfg, _ = b.parse(nil)
	}
	return NewPickerBuilder(b.name, func(serving []*Endpoint) Picker {
		return b.build(cfg, serving)
	}).Build(opts)
}

// isEmptyJSON reports whether js carries no settings at all.
func isEmptyJSON(js json.RawMessage) bool {
	js = bytes.TrimSpace(js)
	return len(js) == 0 || bytes.Equal(js, []byte("null"))
}

// unmarshalConfig decodes js into v unless js is empty, so that an absent
// configuration means the defaults already in v.
func unmarshalConfig(js json.RawMessage, v any) error {
	if isEmptyJSON(js) {
		return nil
	}
	if err := json.Unmarshal(js, v); err != nil {
		return fmt.Errorf("invalid config: %w", err)
	}
	return nil
}

// jsonDuration is a duration written in JSON as a Go duration string
// ("10s", "250ms"), the form protobuf's JSON mapping of Duration also takes.
type jsonDuration time.Duration

func (d *jsonDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string such as \"10s\": %w", err)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = jsonDuration(v)
	return nil
}
