package stream

import (
	"net/http"

	"github.com/sandboxapi/sandboxapi/billing/plans"
	"github.com/sandboxapi/sandboxapi/cell/apierror"
)

// CheckPlan refuses a plan that does not include streaming.
func CheckPlan(p plans.Plan) error {
	if p.Streaming {
		return nil
	}
	return apierror.New(apierror.StreamingNotInPlan, "streaming is not included in the %s plan", p.Name)
}

// Fail ends sw with a refusal or failure, rendered as status and body: as
// the plain answer a non-streaming endpoint would send if the stream has
// not opened yet, else as an error event with body as its data.
func Fail(w http.ResponseWriter, sw *Writer, status int, body any) {
	if !sw.Fail(body) {
		apierror.WriteBody(w, status, body)
	}
}
