// Package openapi holds the OpenAPI 3.1 document of every public endpoint
// (openapi.yaml), which nodes serve at GET /openapi.json (api.DocumentPath). It is written by
// hand beside the code; what keeps it from drifting is package
// openapitest, through which the end-to-end tests validate every request
// they make and every answer they get.
package openapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"sync"

	"go.yaml.in/yaml/v3"
)

//go:embed openapi.yaml
var source []byte

var jsonDoc = sync.OnceValues(func() ([]byte, error) {
	var v any
	if err := yaml.Unmarshal(source, &v); err != nil {
		return nil, fmt.Errorf("openapi: openapi.yaml: %w", err)
	}
	return json.Marshal(v)
})

// JSON is the document as served. It panics if openapi.yaml does not
// parse, which TestDocument catches before any build ships.
func JSON() []byte {
	b, err := jsonDoc()
	if err != nil {
		panic(err)
	}
	return b
}
