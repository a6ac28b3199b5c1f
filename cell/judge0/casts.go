package judge0

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// scalar is a number or boolean field of a submission as Judge0 (Rails)
// casts its parameters: the value itself or one in a string ("5",
// "true"). A blank string is no value, as Rails has it; a value that does
// not cast keeps its refusal (bad), said with its field's name (value).
type scalar[T float64 | bool] struct {
	v     T
	blank bool
	bad   string
}

type (
	// number is a numeric field: a JSON number, or one in a string.
	number = scalar[float64]
	// flag is a boolean field: true or false, or what Rails casts to
	// one: "true", "1", "t", "on" and "false", "0", "f", "off" in any
	// case, 1 and 0.
	flag = scalar[bool]
)

func (s *scalar[T]) UnmarshalJSON(b []byte) error {
	*s = scalar[T]{}
	str := string(b)
	if len(b) > 0 && b[0] == '"' {
		_ = json.Unmarshal(b, &str) // a JSON string: the decoder checked it
	}
	str = strings.TrimSpace(str)
	if str == "" {
		s.blank = true
		return nil
	}
	switch v := any(&s.v).(type) {
	case *float64:
		n, err := strconv.ParseFloat(str, 64)
		if err != nil {
			s.bad = "is not a number"
		}
		*v = n
	case *bool:
		switch strings.ToLower(str) {
		case "true", "1", "t", "on":
			*v = true
		case "false", "0", "f", "off":
		default:
			s.bad = "must be true or false"
		}
	}
	return nil
}

// value is s's value, nil when absent or blank, or its refusal.
func (s *scalar[T]) value(field string) (*T, error) {
	switch {
	case s == nil || s.blank:
		return nil, nil
	case s.bad != "":
		return nil, fieldError(apierror.InvalidField, field, "%s", s.bad)
	}
	return &s.v, nil
}

// castField is s's value, unless *err is set already; a refusal sets it.
func castField[T float64 | bool](s *scalar[T], field string, err *error) *T {
	if *err != nil {
		return nil
	}
	v, e := s.value(field)
	*err = e
	return v
}

// castRaw is raw, a field accepted at submit time, cast: nil when it is
// blank or does not cast.
func castRaw[T float64 | bool](raw json.RawMessage) *T {
	var s scalar[T]
	_ = s.UnmarshalJSON(raw) // never fails
	v, _ := s.value("")
	return v
}
