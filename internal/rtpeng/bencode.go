// Package rtpeng runs the same media load as `ponte load` through rtpengine (the Sipwise media
// proxy, Debian package rtpengine-daemon) in userspace, so that ponte's CPU per call can be
// compared with a widely deployed WebRTC <-> RTP gateway measured on the same machine in the
// same way. It drives rtpengine over its ng control protocol (bencoded dictionaries over UDP),
// places N calls between a real pion WebRTC peer (ICE, DTLS-SRTP, Opus) and a plain RTP socket
// (PCMU, or Opus for passthrough), checks the tones both ways and reads rtpengine's CPU and
// memory from /proc.
package rtpeng

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// ErrBencode is returned (wrapped) for input that is not one well-formed bencoded value, and
// for Go values that have no bencoding.
var ErrBencode = errors.New("rtpeng: bencode")

// Dict is a bencoded dictionary as the ng protocol uses it.
type Dict = map[string]any

// maxDepth bounds nesting when decoding, so hostile input cannot exhaust the stack. ng
// messages nest three levels at most (dict -> "codec" dict -> list).
const maxDepth = 32

// Encode returns the bencoding (BEP 3) of v: string and []byte as byte strings, int and int64
// as integers, []any and []string as lists, map[string]any as a dictionary with its keys in
// sorted raw-byte order, as BEP 3 requires.
func Encode(v any) ([]byte, error) { return AppendEncode(nil, v) }

// AppendEncode appends the bencoding of v to dst.
func AppendEncode(dst []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case string:
		dst = strconv.AppendInt(dst, int64(len(x)), 10)
		dst = append(dst, ':')
		return append(dst, x...), nil
	case []byte:
		dst = strconv.AppendInt(dst, int64(len(x)), 10)
		dst = append(dst, ':')
		return append(dst, x...), nil
	case int:
		return appendInt(dst, int64(x)), nil
	case int64:
		return appendInt(dst, x), nil
	case []string:
		dst = append(dst, 'l')
		for _, s := range x {
			dst, _ = AppendEncode(dst, s)
		}
		return append(dst, 'e'), nil
	case []any:
		dst = append(dst, 'l')
		for _, e := range x {
			var err error
			if dst, err = AppendEncode(dst, e); err != nil {
				return nil, err
			}
		}
		return append(dst, 'e'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys) // Go compares strings bytewise: BEP 3's raw-string order
		dst = append(dst, 'd')
		for _, k := range keys {
			dst, _ = AppendEncode(dst, k)
			var err error
			if dst, err = AppendEncode(dst, x[k]); err != nil {
				return nil, err
			}
		}
		return append(dst, 'e'), nil
	}
	return nil, fmt.Errorf("%w: cannot encode %T", ErrBencode, v)
}

func appendInt(dst []byte, v int64) []byte {
	dst = append(dst, 'i')
	dst = strconv.AppendInt(dst, v, 10)
	return append(dst, 'e')
}

// Decode parses b, which must hold exactly one bencoded value. Byte strings come back as
// string, integers as int64, lists as []any and dictionaries as map[string]any. It is strict
// where BEP 3 is ("i-0e", leading zeros, and non-string keys are errors) and also rejects
// duplicate dictionary keys, so every accepted input has one meaning; key order is not
// enforced, since a lenient reader costs nothing here.
func Decode(b []byte) (any, error) {
	d := decoder{b: b}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.i != len(b) {
		return nil, fmt.Errorf("%w: %d bytes after the value", ErrBencode, len(b)-d.i)
	}
	return v, nil
}

type decoder struct {
	b []byte
	i int
}

func (d *decoder) errf(format string, a ...any) error {
	return fmt.Errorf("%w: at offset %d: %s", ErrBencode, d.i, fmt.Sprintf(format, a...))
}

func (d *decoder) value(depth int) (any, error) {
	if d.i >= len(d.b) {
		return nil, d.errf("unexpected end")
	}
	switch c := d.b[d.i]; {
	case c == 'i':
		return d.integer()
	case c >= '0' && c <= '9':
		return d.str()
	case c == 'l':
		if depth >= maxDepth {
			return nil, d.errf("nested deeper than %d", maxDepth)
		}
		d.i++
		list := []any{}
		for {
			if d.i >= len(d.b) {
				return nil, d.errf("unterminated list")
			}
			if d.b[d.i] == 'e' {
				d.i++
				return list, nil
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			list = append(list, v)
		}
	case c == 'd':
		if depth >= maxDepth {
			return nil, d.errf("nested deeper than %d", maxDepth)
		}
		d.i++
		dict := map[string]any{}
		for {
			if d.i >= len(d.b) {
				return nil, d.errf("unterminated dictionary")
			}
			if d.b[d.i] == 'e' {
				d.i++
				return dict, nil
			}
			if c := d.b[d.i]; c < '0' || c > '9' {
				return nil, d.errf("dictionary key is not a string")
			}
			k, err := d.str()
			if err != nil {
				return nil, err
			}
			if _, dup := dict[k]; dup {
				return nil, d.errf("duplicate key %q", k)
			}
			v, err := d.value(depth + 1)
			if err != nil {
				return nil, err
			}
			dict[k] = v
		}
	default:
		return nil, d.errf("unexpected byte %q", c)
	}
}

// digits reads the decimal number that ends at the byte end; BEP 3 allows no leading zeros
// (other than "0" itself) and no sign here.
func (d *decoder) digits(end byte) (string, error) {
	start := d.i
	for d.i < len(d.b) && d.b[d.i] != end {
		if c := d.b[d.i]; c < '0' || c > '9' {
			return "", d.errf("unexpected byte %q in a number", c)
		}
		d.i++
	}
	if d.i >= len(d.b) {
		return "", d.errf("unterminated number")
	}
	s := string(d.b[start:d.i])
	d.i++ // the terminator
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return "", d.errf("bad number %q", s)
	}
	return s, nil
}

func (d *decoder) integer() (int64, error) {
	d.i++ // 'i'
	neg := d.i < len(d.b) && d.b[d.i] == '-'
	if neg {
		d.i++
	}
	s, err := d.digits('e')
	if err != nil {
		return 0, err
	}
	if neg && s == "0" {
		return 0, d.errf("i-0e")
	}
	if neg {
		s = "-" + s
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, d.errf("integer %s out of range", s)
	}
	return v, nil
}

func (d *decoder) str() (string, error) {
	s, err := d.digits(':')
	if err != nil {
		return "", err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > len(d.b)-d.i {
		return "", d.errf("string of %s bytes with %d left", s, len(d.b)-d.i)
	}
	v := string(d.b[d.i : d.i+n])
	d.i += n
	return v, nil
}
