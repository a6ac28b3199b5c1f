package execreq

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/billing/plans"
)

// Limits of the request contract (sandboxapi-docs.txt, Request Parameters,
// and unsandbox-docs.txt, Input Files).
const (
	// MaxBodyBytes leaves room for the largest field, a base64 ZIP of up to
	// 10 MB, and the JSON around it.
	MaxBodyBytes = 16 << 20
	// MaxBatchBodyBytes bounds a whole batch body; large batches of large
	// programs belong in async jobs.
	MaxBatchBodyBytes = 32 << 20

	MaxCodeBytes            = 1 << 20
	MaxScriptBytes          = 4 << 10
	MaxCompilerOptionsChars = 512
	MaxArgumentsChars       = 512
	// MaxFilesBytes bounds the decompressed size of additional_files and
	// the decoded size of all input_files together.
	MaxFilesBytes = 10 << 20
	// MaxZipEntries bounds the entries of additional_files, directories
	// included: each costs a header parse and an inode in the sandbox.
	MaxZipEntries = 1000
	// MaxPathBytes bounds a path inside additional_files.
	MaxPathBytes = 1024
	// MaxCallbackURLBytes bounds callback_url.
	MaxCallbackURLBytes = 2048

	DefaultTimeout = 10 * time.Second
)

// Limits of the unsandbox dialect.
const (
	MaxInputFiles         = 10
	MaxInputFileBytes     = 5 << 20
	MaxInputFilenameChars = 256
	MinTTLSeconds         = 1
	MaxTTLSeconds         = 900
	DefaultTTL            = 60 * time.Second

	// Environment variables: one value must stay under the kernel's limit
	// for a single argv/env string (128 KiB), all of them well under
	// ARG_MAX.
	MaxEnvVars       = 100
	MaxEnvNameBytes  = 128
	MaxEnvValueBytes = 32 << 10
	MaxEnvTotalBytes = 128 << 10
)

// decodeJSON decodes one JSON object into v and turns decoding errors into
// the API's words.
func decodeJSON(data []byte, v any, what string) error {
	if err := json.Unmarshal(data, v); err != nil {
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &ute) && ute.Field == "":
			return badRequest(CodeInvalidJSON, "%s must be a JSON object", what)
		case errors.As(err, &ute):
			return badRequest(CodeInvalidField, "field %q must be %s", ute.Field, jsonTypeName(ute.Type.Kind().String()))
		default:
			return badRequest(CodeInvalidJSON, "%s is not valid JSON: %v", what, err)
		}
	}
	return nil
}

func jsonTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "float64", "float32":
		return "a number"
	case "int", "int64", "int32", "uint", "uint64":
		return "an integer"
	case "map":
		return "an object"
	case "slice":
		return "an array"
	case "struct":
		return "an object"
	default:
		return "a " + kind
	}
}

// decodeBase64 accepts standard base64 with or without padding. Line breaks
// (as `base64` wraps its output) are ignored.
func decodeBase64(s, field string) ([]byte, error) {
	s = strings.NewReplacer("\n", "", "\r", "").Replace(s)
	enc := base64.StdEncoding
	if len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, badRequest(CodeInvalidBase64, "%s is not valid base64: %v", field, err)
	}
	return b, nil
}

// checkChars refuses a text field longer than max characters.
func checkChars(s, field string, max int) error {
	if n := utf8.RuneCountInString(s); n > max {
		return badRequest(CodeFieldTooLong, "%s is %d characters; the limit is %d", field, n, max)
	}
	return nil
}

func checkBytes(s, field string, max int) error {
	if len(s) > max {
		return badRequest(CodeFieldTooLong, "%s is %d bytes; the limit is %d", field, len(s), max)
	}
	return nil
}

func checkNoNUL(s, field string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return badRequest(CodeInvalidField, "%s must not contain NUL bytes", field)
	}
	return nil
}

// timeouts resolves the CPU and wall limits of a /v1 request against the
// plan. Seconds are compared as floats before any conversion, so a huge
// number cannot overflow into a small duration.
func timeouts(cpu, wall *float64, plan plans.Plan) (time.Duration, time.Duration, error) {
	maxS := float64(plan.MaxTimeoutSeconds)
	// A request that sets nothing must work on every plan, even one whose
	// cap is below the default.
	cpuS := min(DefaultTimeout.Seconds(), maxS)
	if cpu != nil {
		if *cpu <= 0 {
			return 0, 0, badRequest(CodeInvalidField, "timeout must be a positive number of CPU seconds")
		}
		cpuS = *cpu
	}
	wallS := cpuS
	if wall != nil {
		if *wall <= 0 {
			return 0, 0, badRequest(CodeInvalidField, "wall_time_limit must be a positive number of seconds")
		}
		wallS = *wall
	}
	if cpuS > maxS || wallS > maxS {
		return 0, 0, badRequest(CodeTimeoutExceedsPlan,
			"timeout and wall_time_limit may be at most %d seconds on the %s plan", plan.MaxTimeoutSeconds, plan.Name)
	}
	return seconds(cpuS), seconds(wallS), nil
}

func seconds(s float64) time.Duration {
	d := time.Duration(s * float64(time.Second))
	// Sub-millisecond limits would round to nothing in the sandbox.
	return max(d, time.Millisecond)
}
