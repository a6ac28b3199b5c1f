#!/usr/bin/env node
// stdio.mjs drives `sandboxapi mcp` (the stdio bridge) with the official
// TypeScript SDK's StdioClientTransport, as a host that starts MCP servers
// as commands does (Claude Desktop), and checks that it answers what the
// same server answers over Streamable HTTP.
//
// It prints one JSON line per check, {"name","ok","details"}, and exits 1
// if any failed. cmd/sandboxapi/mcp_clients_test.go (TestMCPStdioBridge)
// runs it; by hand, against `make run`:
//
//   SANDBOXAPI_API_KEY=sk_... node ops/clients/mcp/stdio.mjs \
//     --bin bin/sandboxapi --url http://127.0.0.1:8080/mcp
//
// Runs with Node >= 20 (the system's) and the SDK from ops/clients/node_modules.

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { HELLO, Mismatch, arg, check, exit, expect, fail, textOf } from './check.mjs';

const bin = arg('--bin');
const mcpURL = arg('--url');
const key = process.env.SANDBOXAPI_API_KEY;
if (!bin || !mcpURL || !key) {
  console.error('usage: SANDBOXAPI_API_KEY=KEY node stdio.mjs --bin PATH/sandboxapi --url http://HOST:PORT/mcp');
  process.exit(2);
}

const clientInfo = { name: 'sandboxapi-ts-sdk-stdio-check', version: '1.0.0' };

// overStdio is a client of the bridge, started as a host starts it: the
// command, its arguments, the key in its environment. connect starts it;
// stderr is what it has written there.
function overStdio(withKey) {
  const transport = new StdioClientTransport({
    command: bin,
    args: ['mcp', '--url', mcpURL],
    env: { SANDBOXAPI_API_KEY: withKey },
    stderr: 'pipe',
  });
  const out = [];
  transport.stderr?.on('data', (b) => out.push(b.toString()));
  const client = new Client(clientInfo);
  return { client, connect: () => client.connect(transport), stderr: () => out.join('') };
}

async function overHTTP() {
  const client = new Client(clientInfo);
  await client.connect(new StreamableHTTPClientTransport(new URL(mcpURL), {
    requestInit: { headers: { Authorization: 'Bearer ' + key } },
  }));
  return client;
}

// shape is a result with what differs from run to run (ids, times,
// memory) taken out: what must be the same over stdio and over HTTP.
function shape(res) {
  const sc = { ...res.structuredContent };
  for (const k of ['id', 'execution_time_ms', 'wall_time_ms', 'memory_used_kb']) {
    if (k in sc) sc[k] = typeof sc[k];
  }
  const text = textOf(res).replace(/\d+(\.\d+)?/g, 'N');
  return { isError: res.isError ?? false, keys: Object.keys(res.structuredContent ?? {}).sort(), structuredContent: sc, text };
}

let http;
let stdio;
try {
  http = await overHTTP();
  stdio = overStdio(key);
  await stdio.connect();
} catch (e) {
  fail('connect', e);
}

await check('stdio: initialize names the server', async () => {
  const v = stdio.client.getServerVersion();
  const h = http.getServerVersion();
  expect(v?.name === 'sandboxapi' && JSON.stringify(v) === JSON.stringify(h), `serverInfo ${JSON.stringify(v)}, over HTTP ${JSON.stringify(h)}`, {});
  expect(JSON.stringify(stdio.client.getServerCapabilities()) === JSON.stringify(http.getServerCapabilities()), 'capabilities differ from HTTP\'s', {
    stdio: stdio.client.getServerCapabilities(), http: http.getServerCapabilities(),
  });
  return { serverInfo: v };
});

// Before tools/list, a tool error as the server sent it (see tools.mjs on
// the SDK's output-schema check of error results).
await check('stdio: a tool error is the one over HTTP', async () => {
  const args = { name: 'execute_code', arguments: { language: 'cobol', code: 'x' } };
  const s = await stdio.client.callTool(args);
  const h = await http.callTool(args);
  expect(s.isError === true && s.structuredContent?.error?.code === 'unsupported_language', `over stdio: ${JSON.stringify(s)}`, {});
  expect(JSON.stringify(s) === JSON.stringify(h), 'differs from HTTP\'s', { stdio: s, http: h });
  return { text: textOf(s) };
});

await check('stdio: tools/list is the one over HTTP', async () => {
  const byName = (l) => [...l.tools].sort((a, b) => a.name.localeCompare(b.name));
  const s = byName(await stdio.client.listTools());
  const h = byName(await http.listTools());
  expect(s.length === 11, `${s.length} tools, want 11`, { names: s.map((t) => t.name) });
  expect(JSON.stringify(s) === JSON.stringify(h), 'the tool definitions differ from HTTP\'s', { stdio: s.map((t) => t.name), http: h.map((t) => t.name) });
  return { names: s.map((t) => t.name) };
});

for (const [language, code] of Object.entries(HELLO)) {
  await check(`stdio: execute_code/${language}`, async () => {
    const args = { name: 'execute_code', arguments: { language, code } };
    const s = await stdio.client.callTool(args);
    const h = await http.callTool(args);
    const sc = s.structuredContent ?? {};
    expect(!s.isError && sc.status === 'completed' && sc.stdout === 'Hello, World!\n' && sc.exit_code === 0 && sc.language === language,
      `over stdio: ${JSON.stringify(s)}`, {});
    expect(JSON.stringify(shape(s)) === JSON.stringify(shape(h)), 'the result differs from HTTP\'s', { stdio: shape(s), http: shape(h) });
    return { id: sc.id };
  });
}

await check('stdio: a wrong key fails the connect, with a message on stderr', async () => {
  const bad = overStdio('sk_live_not_a_key');
  const started = Date.now();
  try {
    await bad.connect();
  } catch (e) {
    await new Promise((r) => setTimeout(r, 200)); // the rest of stderr
    const err = bad.stderr();
    expect(/401|Unauthorized/i.test(e.message), `connect failed with ${JSON.stringify(e.message)}, want the 401`, { stderr: err });
    expect(/401/.test(err) && err.includes('SANDBOXAPI_API_KEY'), 'stderr does not say the key was refused', { stderr: err });
    expect(!/panic|goroutine /.test(err), 'the bridge panicked', { stderr: err });
    return { error: e.message, stderr: err, ms: Date.now() - started };
  }
  await bad.client.close();
  throw new Mismatch('connect with a wrong key succeeded', { stderr: bad.stderr() });
});

await stdio.client.close();
await http.close();
exit();
