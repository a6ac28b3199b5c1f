package execreq

import (
	"encoding/base64"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// Limits of the request contract (docs/api.md: the request fields of
// POST /v1/execute, and the unsandbox dialect's input_files).
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
	// MaxNameBytes bounds one component of a file's path (a ZIP entry's
	// directories and file name, an input file's name): Linux's NAME_MAX.
	// The sandbox cannot create a longer name, so it is refused before a
	// run rather than fail one.
	MaxNameBytes = 255
	// MaxCallbackURLBytes bounds callback_url.
	MaxCallbackURLBytes = 2048

	DefaultTimeout = 10 * time.Second
)

// DecodeBase64 accepts standard base64 with or without padding. Line breaks
// (as `base64` wraps its output) are ignored.
func DecodeBase64(s, field string) ([]byte, error) {
	s = strings.NewReplacer("\n", "", "\r", "").Replace(s)
	enc := base64.StdEncoding
	if len(s)%4 != 0 {
		enc = base64.RawStdEncoding
	}
	b, err := enc.DecodeString(s)
	if err != nil {
		return nil, apierror.New(apierror.InvalidBase64, "%s is not valid base64: %v", field, err)
	}
	return b, nil
}

// CheckChars refuses a text field longer than max characters.
func CheckChars(s, field string, max int) error {
	if n := utf8.RuneCountInString(s); n > max {
		return apierror.New(apierror.FieldTooLong, "%s is %d characters; the limit is %d", field, n, max)
	}
	return nil
}

// CheckBytes refuses a field longer than max bytes.
func CheckBytes(s, field string, max int) error {
	if len(s) > max {
		return apierror.New(apierror.FieldTooLong, "%s is %d bytes; the limit is %d", field, len(s), max)
	}
	return nil
}

// CheckNoNUL refuses a field holding a NUL byte, which no argv or file
// name can carry.
func CheckNoNUL(s, field string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return apierror.New(apierror.InvalidField, "%s must not contain NUL bytes", field)
	}
	return nil
}

// Timeouts resolves the CPU and wall limits of a /v1 request against the
// plan. Seconds are compared as floats before any conversion, so a huge
// number cannot overflow into a small duration.
func Timeouts(cpu, wall *float64, plan plans.Plan) (time.Duration, time.Duration, error) {
	maxS := float64(plan.MaxTimeoutSeconds)
	// A request that sets nothing must work on every plan, even one whose
	// cap is below the default.
	cpuS := min(DefaultTimeout.Seconds(), maxS)
	if cpu != nil {
		if *cpu <= 0 {
			return 0, 0, apierror.New(apierror.InvalidField, "timeout must be a positive number of CPU seconds")
		}
		cpuS = *cpu
	}
	wallS := cpuS
	if wall != nil {
		if *wall <= 0 {
			return 0, 0, apierror.New(apierror.InvalidField, "wall_time_limit must be a positive number of seconds")
		}
		wallS = *wall
	}
	if cpuS > maxS || wallS > maxS {
		return 0, 0, apierror.New(apierror.TimeoutExceedsPlan,
			"timeout and wall_time_limit may be at most %d seconds on the %s plan", plan.MaxTimeoutSeconds, plan.Name)
	}
	return seconds(cpuS), seconds(wallS), nil
}

func seconds(s float64) time.Duration {
	d := time.Duration(s * float64(time.Second))
	// Sub-millisecond limits would round to nothing in the sandbox.
	return max(d, time.Millisecond)
}
