// Package sandboxapi is the gateway's Caddy modules, for a stock Caddy
// built with them: xcaddy imports a plugin module's root package, and
// this one imports every module of caddy-modules (xcaddy.Dockerfile,
// TestXcaddyBuild). The service itself is cmd/sandboxapi.
package sandboxapi

import (
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/auth"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/cellroute"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/conns"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/limits"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/playground"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/request"
	_ "github.com/sandboxapi/sandboxapi/caddy-modules/selfserve"
)
