#!/usr/bin/env node
// tools.mjs drives every tool of SandboxAPI's MCP server with the official
// TypeScript SDK (Client + StreamableHTTPClientTransport), the way an MCP
// host does: connect with the API key in requestInit's headers, list the
// tools, call them. It asserts what each answer holds, not only that no
// exception was thrown.
//
// It prints one JSON line per check, {"name","ok","details"}, and exits 1
// if any failed. cmd/sandboxapi/mcp_clients_test.go (TestMCPWithTheTypeScriptSDK)
// runs it against a dev server; by hand, against `make run`:
//
//   SANDBOXAPI_API_KEY=sk_... [SANDBOXAPI_BASIC_KEY=sk_...] [SANDBOXAPI_PIP_PACKAGE=name] \
//     node ops/clients/mcp/tools.mjs --url http://127.0.0.1:8080/mcp
//
// SANDBOXAPI_API_KEY is a mega key (the dev key); SANDBOXAPI_BASIC_KEY a
// key of the basic plan, for its refusals; SANDBOXAPI_PIP_PACKAGE a pip
// package in the server's offline cache whose module has its name. A
// check whose input is missing fails, saying so. --only NAME,... runs the
// checks whose names start with one of them.
//
// Runs with Node >= 20 (the system's) and the SDK from ops/clients/node_modules.

import os from 'node:os';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport, StreamableHTTPError } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { HELLO, Mismatch, arg, check, exit, expect, fail, runOnly, textOf } from './check.mjs';

const TOOLS = [
  'create_session', 'execute_async', 'execute_batch', 'execute_code', 'execute_with_expected',
  'get_capabilities', 'get_execution', 'list_languages', 'session_close', 'session_execute',
  'session_install_packages',
];
const LANGUAGES = [
  'bash', 'c', 'cpp', 'csharp', 'go', 'java', 'javascript', 'php', 'python3', 'ruby', 'rust', 'typescript',
];
const LATENCY_RUNS = 10;

const mcpURL = arg('--url');
const key = process.env.SANDBOXAPI_API_KEY;
const basicKey = process.env.SANDBOXAPI_BASIC_KEY;
const pipPackage = process.env.SANDBOXAPI_PIP_PACKAGE;
if (!mcpURL || !key) {
  console.error('usage: SANDBOXAPI_API_KEY=KEY node tools.mjs --url http://HOST:PORT/mcp');
  process.exit(2);
}
const restURL = new URL('/v1/execute', mcpURL).href;
runOnly(arg('--only')?.split(','));

// A fetch that remembers the last response's status and WWW-Authenticate,
// so that a refused connect can be checked for them.
function recordingFetch() {
  const seen = { status: 0, wwwAuthenticate: null };
  const f = async (url, init) => {
    const resp = await fetch(url, init);
    seen.status = resp.status;
    seen.wwwAuthenticate = resp.headers.get('www-authenticate');
    return resp;
  };
  return { f, seen };
}

// connect opens an MCP session with the key as a bearer token, as a host
// configured with headers does; no key sends no Authorization at all.
async function connect(withKey, fetchFn) {
  const headers = withKey === undefined ? {} : { Authorization: 'Bearer ' + withKey };
  const transport = new StreamableHTTPClientTransport(new URL(mcpURL), {
    requestInit: { headers },
    ...(fetchFn ? { fetch: fetchFn } : {}),
  });
  const client = new Client({ name: 'sandboxapi-ts-sdk-check', version: '1.0.0' });
  await client.connect(transport);
  return client;
}

// call calls a tool and requires a result that is not a tool error.
async function call(client, name, args) {
  const res = await client.callTool({ name, arguments: args });
  expect(!res.isError, `${name} returned a tool error: ${textOf(res)}`, { result: res });
  expect(res.structuredContent && typeof res.structuredContent === 'object', `${name}: no structuredContent`, { result: res });
  return { sc: res.structuredContent, text: textOf(res), res };
}

// execution checks an execution's result, structured and as text: the
// text must say what the structured content says. Its id is an
// execution's (exec_), or the job's token for an async one (idPrefix).
function execution(sc, text, want, idPrefix = 'exec_') {
  const seen = { structuredContent: sc, text };
  for (const [k, v] of Object.entries(want)) {
    expect(sc[k] === v, `${k} is ${JSON.stringify(sc[k])}, want ${JSON.stringify(v)}`, seen);
  }
  expect((sc.id ?? '').startsWith(idPrefix), `id ${JSON.stringify(sc.id)} does not start with ${idPrefix}`, seen);
  for (const f of ['execution_time_ms', 'wall_time_ms', 'memory_used_kb']) {
    expect(Number.isInteger(sc[f]) && sc[f] >= 0, `${f} is ${sc[f]}`, seen);
  }
  expect(sc.memory_used_kb > 0, 'memory_used_kb is 0', seen);
  const shown = [
    `status: ${sc.status} · exit code ${sc.exit_code}`,
    `CPU ${sc.execution_time_ms} ms · wall ${sc.wall_time_ms} ms`,
    sc.stdout ? `stdout:\n${sc.stdout}` : 'stdout: (empty)',
    sc.stderr ? `stderr:\n${sc.stderr}` : 'stderr: (empty)',
  ];
  for (const s of shown) {
    expect(text.includes(s), `the text does not show ${JSON.stringify(s)}`, seen);
  }
}

// toolError checks a tool error: isError, the code in the text and in
// structuredContent.error.
function toolError(res, code) {
  const text = textOf(res);
  const seen = { result: res };
  expect(res.isError === true, `isError is ${res.isError}, want true`, seen);
  expect(text.startsWith(code + ': '), `text ${JSON.stringify(text)} does not start with "${code}: "`, seen);
  expect(res.structuredContent?.error?.code === code, `structuredContent.error.code is ${JSON.stringify(res.structuredContent?.error?.code)}, want ${code}`, seen);
  expect(typeof res.structuredContent.error.message === 'string' && res.structuredContent.error.message !== '', 'no error message', seen);
  return { text };
}

// refusedConnect checks that connecting with withKey fails with HTTP 401
// and a Bearer challenge.
async function refusedConnect(withKey) {
  const { f, seen } = recordingFetch();
  let client;
  try {
    client = await connect(withKey, f);
  } catch (e) {
    expect(e instanceof StreamableHTTPError, `connect failed with ${e?.constructor?.name}, want a StreamableHTTPError`, { cause: String(e) });
    expect(e.code === 401, `connect failed with code ${e.code}, want 401`, { cause: e.message });
    expect(seen.status === 401 && /^Bearer\b/.test(seen.wwwAuthenticate ?? ''), `HTTP ${seen.status}, WWW-Authenticate ${JSON.stringify(seen.wwwAuthenticate)}; want 401 and Bearer`, {});
    return { code: e.code, wwwAuthenticate: seen.wwwAuthenticate, message: e.message };
  }
  await client.close();
  throw new Mismatch('connect succeeded');
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x) => Math.round(x * 10) / 10;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let client;
try {
  client = await connect(key);
} catch (e) {
  fail('connect', e);
}

// tools/list first, as a host does: the SDK then checks every result's
// structured content against the tool's outputSchema.
await check('tools/list', async () => {
  const { tools } = await client.listTools();
  const names = tools.map((t) => t.name).sort();
  expect(JSON.stringify(names) === JSON.stringify(TOOLS), `tools ${names.join(', ')}; want exactly ${TOOLS.join(', ')}`, { names });
  for (const t of tools) {
    expect(t.inputSchema?.type === 'object', `${t.name}: inputSchema ${JSON.stringify(t.inputSchema)}`, {});
    expect(t.outputSchema?.type === 'object' && t.outputSchema.properties, `${t.name}: outputSchema ${JSON.stringify(t.outputSchema)}`, {});
    expect(t.description, `${t.name}: no description`, {});
  }
  return { names };
});

for (const [language, code] of Object.entries(HELLO)) {
  await check(`execute_code/${language}`, async () => {
    const { sc, text } = await call(client, 'execute_code', { language, code });
    execution(sc, text, { status: 'completed', language, stdout: 'Hello, World!\n', stderr: '', exit_code: 0 });
    return { id: sc.id, wall_time_ms: sc.wall_time_ms };
  });
}

await check('execute_batch', async () => {
  const { sc, text } = await call(client, 'execute_batch', {
    executions: [
      { language: 'bash', code: 'echo first' },
      { language: 'cobol', code: 'DISPLAY "x".' },
      { language: 'python3', code: 'print("third")' },
    ],
  });
  const r = sc.results;
  expect(Array.isArray(r) && r.length === 3, `${r?.length} results, want 3`, { structuredContent: sc });
  execution(r[0], text, { status: 'completed', stdout: 'first\n', language: 'bash' });
  expect(r[1].error?.code === 'unsupported_language' && r[1].status === undefined, `result 1 is ${JSON.stringify(r[1])}, want an unsupported_language error`, { structuredContent: sc });
  execution(r[2], text, { status: 'completed', stdout: 'third\n', language: 'python3' });
  expect(text.includes('[1] error: unsupported_language: '), 'the text does not show item 1\'s error', { text });
  return { statuses: r.map((x) => x.status ?? x.error.code) };
});

await check('session: create, execute, execute, close', async () => {
  const { sc: s, text } = await call(client, 'create_session', { language: 'python3' });
  expect(/^sess_/.test(s.id ?? '') && s.language === 'python3' && s.executions === 0, 'not a new python3 session', { structuredContent: s });
  expect(text.includes(s.id), 'the text does not name the session', { text });
  const set = await call(client, 'session_execute', { session_id: s.id, code: 'x = 42' });
  execution(set.sc, set.text, { status: 'completed', stdout: '', session_id: s.id, state_lost: false });
  const get = await call(client, 'session_execute', { session_id: s.id, code: 'print(x)' });
  execution(get.sc, get.text, { status: 'completed', stdout: '42\n', session_id: s.id, state_lost: false });
  const closed = await call(client, 'session_close', { session_id: s.id });
  expect(closed.sc.id === s.id && closed.sc.status === 'closed' && closed.sc.executions === 2, `session_close gave ${JSON.stringify(closed.sc)}, want ${s.id} closed after 2 executions`, {});
  return { session: s.id, executions: closed.sc.executions };
});

await check('session_install_packages', async () => {
  expect(pipPackage, 'SANDBOXAPI_PIP_PACKAGE names no package of the offline cache', {});
  const { sc: s } = await call(client, 'create_session', { language: 'python3' });
  try {
    const importIt = `import ${pipPackage}\nprint(${pipPackage}.__name__)`;
    const before = await call(client, 'session_execute', { session_id: s.id, code: importIt });
    expect(before.sc.status === 'runtime_error' && before.sc.stderr.includes('ModuleNotFoundError'), `before the install the import gave ${before.sc.status}`, { structuredContent: before.sc });
    const inst = await call(client, 'session_install_packages', { session_id: s.id, manager: 'pip', packages: [pipPackage] });
    const got = inst.sc.installed?.find((p) => p.name === pipPackage);
    expect(inst.sc.manager === 'pip' && got?.version, `installed ${JSON.stringify(inst.sc.installed)}, want ${pipPackage}`, { structuredContent: inst.sc });
    expect(inst.text.includes(`${pipPackage} ${got.version}`), 'the text does not name the package', { text: inst.text });
    const after = await call(client, 'session_execute', { session_id: s.id, code: importIt });
    execution(after.sc, after.text, { status: 'completed', stdout: pipPackage + '\n' });
    return { installed: inst.sc.installed, duration_ms: inst.sc.duration_ms };
  } finally {
    await client.callTool({ name: 'session_close', arguments: { session_id: s.id } }).catch(() => {});
  }
});

await check('execute_async + get_execution', async () => {
  const { sc: a, text } = await call(client, 'execute_async', { language: 'python3', code: 'import time\ntime.sleep(1)\nprint("async done")' });
  expect(/^job_/.test(a.token ?? '') && a.status === 'queued', `execute_async gave ${JSON.stringify(a)}`, {});
  expect(text.includes(a.token), 'the text does not give the token', { text });
  const statuses = [];
  const deadline = Date.now() + 30_000;
  for (;;) {
    const got = await call(client, 'get_execution', { token: a.token });
    statuses.push(got.sc.status);
    if (got.sc.status !== 'queued' && got.sc.status !== 'running') {
      execution(got.sc, got.text, { status: 'completed', stdout: 'async done\n', language: 'python3', token: a.token }, 'job_');
      break;
    }
    expect(Date.now() < deadline, 'still not done after 30 s', { statuses });
    expect(got.text.includes('ask again'), 'a pending execution\'s text does not say to ask again', { text: got.text });
    await sleep(200);
  }
  expect(statuses.length > 1, 'the first get_execution already had the result of a 1 s program', { statuses });
  return { token: a.token, polls: statuses.length, statuses: [...new Set(statuses)] };
});

await check('execute_with_expected', async () => {
  const wrong = await call(client, 'execute_with_expected', { language: 'python3', code: 'print(6 * 7)', expected_output: '41' });
  execution(wrong.sc, wrong.text, { status: 'wrong_answer', stdout: '42\n' });
  const right = await call(client, 'execute_with_expected', { language: 'python3', code: 'print(6 * 7)', expected_output: '42' });
  execution(right.sc, right.text, { status: 'completed', stdout: '42\n' });
  return { wrong: wrong.sc.status, right: right.sc.status };
});

// languages checks the 12 languages, each with a detected version.
function languages(list, text) {
  const ids = (list ?? []).map((l) => l.id).sort();
  expect(JSON.stringify(ids) === JSON.stringify(LANGUAGES), `languages ${ids.join(', ')}; want ${LANGUAGES.join(', ')}`, { list });
  for (const l of list) {
    expect(l.name && l.version && l.version !== 'unknown', `${l.id}: name ${JSON.stringify(l.name)}, version ${JSON.stringify(l.version)}`, {});
    expect(text.includes(`${l.id}`) && text.includes(l.version), `the text does not show ${l.id} ${l.version}`, { text });
  }
  return Object.fromEntries(list.map((l) => [l.id, l.version]));
}

await check('get_capabilities', async () => {
  const { sc, text } = await call(client, 'get_capabilities', {});
  expect(sc.plan?.name === 'mega', `plan ${JSON.stringify(sc.plan?.name)}, want mega`, { structuredContent: sc });
  for (const f of ['sessions', 'packages', 'async', 'batch', 'streaming']) {
    expect(sc.features?.[f] === true, `feature ${f} is ${sc.features?.[f]}, want true on mega`, { features: sc.features });
  }
  expect(JSON.stringify([...(sc.tools ?? [])].sort()) === JSON.stringify(TOOLS), `tools ${sc.tools}, want all 11`, {});
  expect(text.startsWith('plan mega: '), 'the text does not name the plan', { text });
  return { plan: sc.plan.name, features: sc.features, languages: languages(sc.languages, text) };
});

await check('list_languages', async () => {
  const { sc, text } = await call(client, 'list_languages', {});
  expect(text.split('\n').length === 12, `the text has ${text.split('\n').length} lines, want 12`, { text });
  return languages(sc.languages, text);
});

await check('errors/no key: connect is refused with 401', () => refusedConnect(undefined));
await check('errors/wrong key: connect is refused with 401', () => refusedConnect('sk_live_not_a_key'));

// Tool errors, first as a client that has not listed the tools sees them
// (no output schema to check them against), then as one that has: that is
// how hosts call tools, and this SDK (1.32.2) then checks an error
// result's structuredContent against the tool's outputSchema too, failing
// the call with -32602 when it does not match (typescript-sdk#1943): a
// server that sends {"error":{...}} must have output schemas that admit it.
const errorCases = [
  { name: 'sessions_not_in_plan', as: 'basic', tool: 'create_session', args: { language: 'python3' } },
  { name: 'unsupported_language', as: 'mega', tool: 'execute_code', args: { language: 'cobol', code: 'x' } },
];
for (const listed of [false, true]) {
  for (const c of errorCases) {
    const when = listed ? 'after tools/list' : 'before tools/list';
    await check(`errors/${c.name} (${when})`, async () => {
      const k = c.as === 'basic' ? basicKey : key;
      expect(k, 'SANDBOXAPI_BASIC_KEY is not set', {});
      const cl = await connect(k);
      try {
        if (listed) await cl.listTools();
        return toolError(await cl.callTool({ name: c.tool, arguments: c.args }), c.name);
      } finally {
        await cl.close();
      }
    });
  }
}

// The same hello world through MCP, on the session opened above, and
// through REST with Node's fetch; alternated, after a warm-up of each.
await check('latency', async () => {
  const args = { language: 'python3', code: HELLO.python3 };
  const viaMCP = async () => {
    const t0 = performance.now();
    const { sc } = await call(client, 'execute_code', args);
    const ms = performance.now() - t0;
    expect(sc.stdout === 'Hello, World!\n', `MCP: ${JSON.stringify(sc)}`, {});
    return ms;
  };
  const viaREST = async () => {
    const t0 = performance.now();
    const resp = await fetch(restURL, {
      method: 'POST',
      headers: { Authorization: 'Bearer ' + key, 'Content-Type': 'application/json' },
      body: JSON.stringify(args),
    });
    const body = await resp.json();
    const ms = performance.now() - t0;
    expect(resp.status === 200 && body.stdout === 'Hello, World!\n', `REST: HTTP ${resp.status} ${JSON.stringify(body)}`, {});
    return ms;
  };
  await viaMCP();
  await viaREST();
  const mcp = [];
  const rest = [];
  for (let i = 0; i < LATENCY_RUNS; i++) {
    mcp.push(await viaMCP());
    rest.push(await viaREST());
  }
  return {
    runs: LATENCY_RUNS,
    loadavg: os.loadavg().map(round),
    mcp_median_ms: round(median(mcp)),
    rest_median_ms: round(median(rest)),
    mcp_ms: mcp.map(round),
    rest_ms: rest.map(round),
  };
});

await client.close();
exit();
