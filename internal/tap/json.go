package tap

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends e as one JSON object, with the field names of its
// struct tags, to buf. It is what encoding/json writes for e (a test
// holds them together) without reflection, so a follower keeping up with
// a busy process costs little CPU beside the requests it watches.
func (e *Event) AppendJSON(buf []byte) []byte {
	buf = append(buf, `{"time":"`...)
	buf = e.Time.AppendFormat(buf, time.RFC3339Nano)
	buf = append(buf, '"')
	buf = appendStringField(buf, "direction", e.Direction)
	buf = appendStringField(buf, "protocol", e.Protocol)
	buf = appendStringField(buf, "method", e.Method)
	buf = appendStringField(buf, "authority", e.Authority)
	buf = appendStringField(buf, "path", e.Path)
	buf = append(buf, `,"status":`...)
	buf = strconv.AppendInt(buf, int64(e.Status), 10)
	buf = appendStringField(buf, "grpc_status", e.GRPCStatus)
	buf = append(buf, `,"latency_ms":`...)
	buf = strconv.AppendFloat(buf, e.LatencyMS, 'f', -1, 64)
	buf = appendStringField(buf, "peer", e.Peer)
	buf = appendStringField(buf, "route", e.Route)
	buf = appendStringField(buf, "cluster", e.Cluster)
	buf = appendStringField(buf, "endpoint", e.Endpoint)
	buf = append(buf, `,"attempts":[`...)
	for i := range e.Attempts {
		a := &e.Attempts[i]
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, `{"endpoint":`...)
		buf = appendString(buf, a.Endpoint)
		buf = append(buf, `,"status":`...)
		buf = strconv.AppendInt(buf, int64(a.Status), 10)
		if a.GRPCStatus != "" {
			buf = appendStringField(buf, "grpc_status", a.GRPCStatus)
		}
		buf = appendStringField(buf, "reason", a.Reason)
		buf = appendStringField(buf, "error", a.Error)
		buf = append(buf, '}')
	}
	buf = append(buf, `],"authz":`...)
	if e.Authz == nil {
		buf = append(buf, "null"...)
	} else {
		buf = append(buf, `{"decision":`...)
		buf = appendString(buf, e.Authz.Decision)
		buf = appendStringField(buf, "rule", e.Authz.Rule)
		buf = append(buf, '}')
	}
	buf = appendStringField(buf, "trace_id", e.TraceID)
	buf = appendStringField(buf, "error", e.Error)
	buf = append(buf, `,"dropped":`...)
	buf = strconv.AppendUint(buf, e.Dropped, 10)
	return append(buf, '}')
}

func appendStringField(buf []byte, name, v string) []byte {
	buf = append(buf, ',', '"')
	buf = append(buf, name...)
	buf = append(buf, '"', ':')
	return appendString(buf, v)
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string, escaping as encoding/json
// does (HTML characters included), and replacing invalid UTF-8.
func appendString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		if b := s[i]; b < utf8.RuneSelf {
			if b >= 0x20 && b != '"' && b != '\\' && b != '<' && b != '>' && b != '&' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch b {
			case '"', '\\':
				buf = append(buf, '\\', b)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			buf = append(buf, s[start:i]...)
			buf = append(buf, '\\', 'u', '2', '0', '2', hex[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}
