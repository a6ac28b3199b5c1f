// Package request gives every request the gateway answers an id.
package request

import (
	"crypto/rand"
	"strings"
)

// HeaderID is the request id's header: on every answer of the gateway, and
// on the request it forwards to the cell, which logs it.
const HeaderID = "X-Request-Id"

// NewID is a new request id: "req_" and 26 random base32 characters, like
// the API's execution ids.
func NewID() string { return "req_" + strings.ToLower(rand.Text()) }
