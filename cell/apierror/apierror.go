// Package apierror is the one JSON error shape of the whole API:
//
//	{"error": {"code": "missing_field", "message": "language is required"}}
//
// Every 4xx and 5xx the gateway or a cell sends has this body, so a client
// handles errors one way.
package apierror

import (
	"encoding/json"
	"net/http"
)

// Body is the JSON error body.
type Body struct {
	Error Detail `json:"error"`
}

// Detail is the error inside a Body.
type Detail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Write sends status with a JSON error body.
func Write(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(Body{Error: Detail{Code: code, Message: message}})
}
