package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/sandboxapi/sandboxapi/cell/mcp/bridge"
)

const mcpUsage = `mcp --url URL

Serves MCP on stdin and stdout and forwards every message to the
Streamable HTTP MCP server at URL (the service's /mcp), for MCP clients
that start servers as commands and cannot send HTTP headers, such as
Claude Desktop. The API key comes from the environment variable
SANDBOXAPI_API_KEY and goes as "Authorization: Bearer KEY" on every
request. Logs go to stderr; stdout is the protocol. Exits 0 when stdin
closes, 1 when the server fails or refuses the key (401).

Claude Desktop's claude_desktop_config.json:

  {"mcpServers": {"sandboxapi": {
    "command": "/path/to/sandboxapi",
    "args": ["mcp", "--url", "https://HOST/mcp"],
    "env": {"SANDBOXAPI_API_KEY": "sk_..."}}}}`

// keyEnv is where `sandboxapi mcp` takes the API key from: not a flag, so
// that it is not in the process list.
const keyEnv = "SANDBOXAPI_API_KEY"

func runMCP(args []string) error {
	fs := flag.NewFlagSet("mcp", flag.ContinueOnError)
	url := fs.String("url", "", "the remote MCP endpoint, such as https://HOST/mcp (required)")
	if err := parseFlags(fs, args, mcpUsage); err != nil {
		return err
	}
	if *url == "" {
		return usagef("mcp", "--url is required")
	}
	if _, err := bridge.ParseURL(*url); err != nil {
		return usagef("mcp", "--url: %v", err)
	}
	key := os.Getenv(keyEnv)
	if key == "" {
		return usagef("mcp", "the environment variable %s (the API key) is not set", keyEnv)
	}
	// A client that goes away mid-answer is an EPIPE to return, not a
	// SIGPIPE that kills the bridge.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(plainHandler{w: os.Stderr, prefix: "sandboxapi mcp: "})
	err := bridge.Run(ctx, &mcp.StdioTransport{}, bridge.Options{URL: *url, Key: key, Logger: log})
	if errors.Is(err, bridge.ErrUnauthorized) {
		return fmt.Errorf("mcp: %w; check %s", err, keyEnv)
	}
	return err
}
