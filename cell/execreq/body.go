// Package execreq is the execution request as every door means it: the
// common Request a dialect parses its requests into, the common Result it
// renders, the API's statuses derived from what the executor reports, and
// the rules of the contract that every dialect's parser applies (body and
// field limits, base64, ZIP archives, compiler options and arguments,
// timeouts against the plan, expected output). See DESIGN.md.
package execreq

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// ReadBody reads a request body of at most limit bytes; a larger one is a
// 413, whatever Content-Length claimed.
func ReadBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, apierror.New(apierror.PayloadTooLarge, "request body exceeds %d bytes", limit)
		}
		return nil, apierror.New(apierror.InvalidJSON, "the request body could not be read: %v", err)
	}
	return b, nil
}

// PlanFor returns the caller's plan. The gateway only signs plans it knows,
// so a miss means the gateway and this cell disagree on the catalog.
func PlanFor(cat plans.Catalog, name string) (plans.Plan, error) {
	p, ok := cat.Get(name)
	if !ok {
		return plans.Plan{}, apierror.New(apierror.UnknownPlan, "plan %q is not known to this cell", name)
	}
	return p, nil
}

// DecodeJSON decodes one JSON object into v and turns decoding errors into
// the API's words; what names the object in them ("the request").
func DecodeJSON(data []byte, v any, what string) error {
	if err := json.Unmarshal(data, v); err != nil {
		var ute *json.UnmarshalTypeError
		switch {
		case errors.As(err, &ute) && ute.Field == "":
			return apierror.New(apierror.InvalidJSON, "%s must be a JSON object", what)
		case errors.As(err, &ute):
			return apierror.New(apierror.InvalidField, "field %q must be %s", ute.Field, jsonTypeName(ute.Type.Kind().String()))
		default:
			return apierror.New(apierror.InvalidJSON, "%s is not valid JSON: %v", what, err)
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
