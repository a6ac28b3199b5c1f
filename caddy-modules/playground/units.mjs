// The page's modules that need no browser, under Node: the server-sent
// events parser, Retry-After and the words for each error, share links.
// TestPageModules runs it with WEB set to the sources' directory; it
// prints the plan, then one JSON line per case, as ops/clients.Checks reads them.
const web = process.env.WEB;
const { events, plainWords, retryAfter, inWords, errorOf } = await import(`${web}/api.js`);
const { shareFragment, readFragment } = await import(`${web}/share.js`);
const { examples } = await import(`${web}/examples.js`);

const cases = [];
const test = (name, fn) => cases.push({ name, fn });
const eq = (got, want, what) => {
  const g = JSON.stringify(got);
  const w = JSON.stringify(want);
  if (g !== w) throw new Error(`${what}: got ${g}, want ${w}`);
};

// A body that arrives in the given pieces.
const body = (chunks) => new ReadableStream({
  start(c) {
    for (const s of chunks) c.enqueue(new TextEncoder().encode(s));
    c.close();
  },
});
const all = async (chunks) => {
  const out = [];
  for await (const ev of events(body(chunks))) out.push(ev);
  return out;
};

test('events: one per blank line, fields and comments', async () => {
  eq(await all([
    ': keep-alive\n\n',
    'event: stdout\nid: exec_1:1\ndata: {"data":"a\\n"}\n\n',
    'event: result\ndata: {"status":"completed"}\n\n',
  ]), [
    { event: 'stdout', data: '{"data":"a\\n"}', id: 'exec_1:1' },
    { event: 'result', data: '{"status":"completed"}', id: '' },
  ], 'events');
});

test('events: split anywhere, CRLF and CR, data over lines', async () => {
  const stream = 'event: stdout\r\ndata: one\r\ndata: two\r\n\r\nevent: stderr\rdata:x\r\r';
  const want = [{ event: 'stdout', data: 'one\ntwo', id: '' }, { event: 'stderr', data: 'x', id: '' }];
  for (let cut = 1; cut < stream.length; cut++) {
    eq(await all([stream.slice(0, cut), stream.slice(cut)]), want, `cut at ${cut}`);
  }
});

test('events: an unfinished event at the end is dropped', async () => {
  eq(await all(['event: stdout\ndata: {"data":"x"}\n\n', 'event: result\ndata: {}']), [
    { event: 'stdout', data: '{"data":"x"}', id: '' },
  ], 'events');
});

test('events: a character split between chunks', async () => {
  const bytes = new TextEncoder().encode('data: {"data":"ü"}\n\n');
  const s = new ReadableStream({
    start(c) {
      c.enqueue(bytes.slice(0, 16));
      c.enqueue(bytes.slice(16));
      c.close();
    },
  });
  const out = [];
  for await (const ev of events(s)) out.push(ev.data);
  eq(out, ['{"data":"ü"}'], 'data');
});

test('Retry-After: seconds, a date, nonsense', () => {
  eq(retryAfter('7'), 7, 'seconds');
  eq(retryAfter(' 120 '), 120, 'padded');
  eq(retryAfter('Thu, 01 Jan 2026 00:00:30 GMT', Date.parse('Thu, 01 Jan 2026 00:00:00 GMT')), 30, 'date');
  eq(retryAfter(''), null, 'empty');
  eq(retryAfter('soon'), null, 'nonsense');
  eq([inWords(7), inWords(600), inWords(7200), inWords(86400 * 10)], ['7 s', '10 min', '2 h', '10 days'], 'words');
});

test('plain words for each error', () => {
  for (const [status, code, message, retry, want] of [
    [401, 'invalid_api_key', '', null, 'Your API key was not accepted'],
    [401, 'missing_api_key', '', null, 'needs an API key'],
    [401, '', '', null, 'Your API key was not accepted'],
    [429, 'rate_limit_exceeded', '', 12, 'Try again in 12 s.'],
    [429, 'monthly_quota_exceeded', '', 3 * 86400, 'start again in 3 days'],
    [429, 'session_limit_reached', '', null, 'as many sessions open as your plan allows'],
    [413, 'code_too_large', '', null, 'the limit is 1 MB of code'],
    [413, 'payload_too_large', '', null, 'the limit is 16 MB per request'],
    [413, '', '', null, 'too large'],
    [403, 'sessions_not_in_plan', 'sessions are in the pro plan and above', null, 'Your plan does not allow this: sessions are in the pro plan and above'],
    [400, 'unsupported_in_session', 'command_line_arguments cannot be used in a session', null, 'The request was refused: command_line_arguments'],
    [404, 'session_not_found', '', null, 'The session has ended'],
    [408, 'queue_timeout', '', null, 'No sandbox became free'],
    [503, 'node_at_capacity', '', 5, 'cannot run this right now. Try again in 5 s.'],
    [502, '', '', null, 'had a problem (HTTP 502)'],
    [0, 'sandbox_unavailable', 'the sandbox stopped', null, "failed on the service's side: the sandbox stopped."],
    [0, 'queue_timeout', '', null, 'No sandbox became free'],
  ]) {
    const words = plainWords(status, code, message, retry);
    if (!words.includes(want)) throw new Error(`${status} ${code}: ${JSON.stringify(words)} lacks ${JSON.stringify(want)}`);
  }
});

test('an answer that is not the API\'s JSON still has words', async () => {
  const err = await errorOf(new Response('<html>bad gateway</html>', { status: 502, headers: { 'Retry-After': '4' } }));
  eq([err.status, err.code], [502, ''], 'status and code');
  if (!err.message.includes('Try again in 4 s')) throw new Error(err.message);
  const json = await errorOf(new Response('{"error":{"code":"invalid_api_key","message":"no such key"}}', { status: 401 }));
  eq([json.status, json.code, json.detail], [401, 'invalid_api_key', '401 invalid_api_key no such key'], 'the API\'s error');
});

test('share links round-trip, and refuse what is not one', () => {
  const p = { language: 'python3', code: 'print("ünï 😀 <b>&")\n', stdin: 'a\nb', args: '1 "2 3"' };
  const f = shareFragment(p);
  if (!/^#p=[A-Za-z0-9_-]+$/.test(f)) throw new Error(`fragment ${f} is not base64url`);
  eq(readFragment(f), p, 'round trip');
  eq(readFragment('#p=' + btoa('{"code":"x"}')), null, 'no language');
  eq(readFragment('#p=%%%'), null, 'not base64');
  eq(readFragment('#p=' + btoa('\xff\xfe')), null, 'not UTF-8');
  eq(readFragment('#section'), null, 'another fragment');
  eq(readFragment(shareFragment({ language: 'c', code: 'x' })), { language: 'c', code: 'x', stdin: '', args: '' }, 'no input');
});

test('every example has a name and code', () => {
  for (const [id, list] of Object.entries(examples)) {
    if (list.length < 2) throw new Error(`${id}: ${list.length} examples`);
    for (const e of list) if (!e.name || !e.code.trim()) throw new Error(`${id}: an example without a name or code`);
  }
});

console.log(JSON.stringify({ plan: cases.map((c) => c.name) }));
for (const { name, fn } of cases) {
  const line = { check: name };
  try {
    await fn();
  } catch (err) {
    line.error = String(err?.stack ?? err);
  }
  console.log(JSON.stringify(line));
}
