// The playground in a browser: headless Chromium (Debian's, never a
// downloaded one) driven by playwright-core against a running gateway.
// cmd/sandboxapi's TestPlaygroundInBrowser runs it against `sandboxapi dev`
// with real sandboxes; with SCREENSHOTS set it also writes the pictures of
// docs/ there (docs/playground.md).
//
// Environment: BASE (http://127.0.0.1:PORT), KEY (an API key of a plan
// with sessions and streaming), CHROMIUM (the browser's path),
// SCREENSHOTS (a directory, optional).
//
// It prints the checks it will make, {"plan": [names]}, then one JSON line
// per check, {"check", "ms", "error"?, "detail"?}, and goes on to the next
// check after a failure; the Go test makes each a subtest, and fails one
// that never reported.
import { chromium } from 'playwright-core';

const base = process.env.BASE;
const key = process.env.KEY;
const shots = process.env.SCREENSHOTS ?? '';

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});

class Failure extends Error {}
const expect = (ok, message) => { if (!ok) throw new Failure(message); };

// page opens the playground in a context of its own (its own
// localStorage), with the key stored unless key is null, and collects
// console errors, page errors and CSP violations.
async function open({ withKey = key, viewport = { width: 1280, height: 800 }, colorScheme = 'light', url = `${base}/` } = {}) {
  const context = await browser.newContext({ viewport, colorScheme });
  if (withKey !== null) {
    await context.addInitScript((k) => { if (!localStorage.getItem('sandboxapi.apiKey')) localStorage.setItem('sandboxapi.apiKey', k); }, withKey);
  }
  const page = await context.newPage();
  // Waits that include a sandbox (a session's start, a compile) get a
  // minute, for a host busy with the rest of the test suite.
  page.setDefaultTimeout(60_000);
  page.problems = [];
  page.on('console', (m) => { if (m.type() === 'error') page.problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => page.problems.push(`page error: ${e.message}`));
  await page.goto(url);
  await page.waitForSelector('.cm-content');
  if (withKey) {
    // The languages came from GET /v1/languages: each has its version.
    await page.waitForFunction(() => [...document.querySelectorAll('#language option')].some((o) => /\d/.test(o.textContent)));
  }
  return page;
}

const noProblems = (page, except = () => false) => {
  const left = page.problems.filter((p) => !except(p));
  expect(left.length === 0, `the page logged: ${left.join(' | ')}`);
};

// setCode types code into the editor as a person would, after removing
// what is there.
async function setCode(page, code) {
  await page.click('.cm-content');
  await page.keyboard.press('ControlOrMeta+A');
  await page.keyboard.press('Delete');
  await page.keyboard.type(code);
}

const editorText = (page) => page.evaluate(() => [...document.querySelectorAll('.cm-line')].map((l) => l.textContent).join('\n'));

async function pick(page, language) {
  await page.selectOption('#language', language);
  await page.waitForFunction((l) => document.getElementById('language').value === l, language);
}

// result waits for a run's status badge and returns its badges, output
// and compiler output: the single run's, or with li the session history
// entry's.
async function result(page, li = null, timeout = 60_000) {
  const scope = li ? { badges: `${li} .badges`, output: `${li} .output` } : { badges: '#badges', output: '#output' };
  await page.waitForSelector(`${scope.badges} [data-badge="status"]`, { timeout });
  return page.evaluate((s) => ({
    badges: Object.fromEntries([...document.querySelectorAll(`${s.badges} [data-badge]`)].map((b) => [b.dataset.badge, b.textContent])),
    output: document.querySelector(s.output).textContent,
    compile: [...document.querySelectorAll(`${s.output} .compile`)].map((e) => e.textContent).join(''),
  }), scope);
}

const checks = [];
const check = (name, fn) => checks.push({ name, fn });

check('page loads with the languages, versions and examples', async () => {
  const page = await open();
  expect(await page.title() === 'SandboxAPI playground', `title ${await page.title()}`);
  const options = await page.$$eval('#language option', (os) => os.map((o) => o.value));
  expect(options.length >= 12, `${options.length} languages: ${options}`);
  for (const id of ['python3', 'javascript', 'c', 'go', 'rust', 'java']) expect(options.includes(id), `no ${id} in ${options}`);
  // Every language listed has example programs.
  for (const id of options) {
    await pick(page, id);
    const n = (await page.$$eval('#example option', (os) => os.length)) - 1;
    expect(n >= 2, `${n} examples for ${id}`);
    expect((await editorText(page)).trim() !== '', `picking ${id} left the editor empty`);
  }
  noProblems(page);
});

for (const [language, code, want] of [
  ['python3', 'print("hi from", "python")', 'hi from python'],
  ['javascript', 'console.log(["hi", "from", "javascript"].join(" "))', 'hi from javascript'],
  ['c', '#include <stdio.h>\nint main(void) { printf("hi from %s\\n", "c"); return 0; }', 'hi from c'],
]) {
  check(`type and run ${language}`, async () => {
    const page = await open();
    await pick(page, language);
    await setCode(page, code);
    await page.fill('#stdin', '');
    await page.fill('#args', '');
    await page.click('#run');
    const r = await result(page);
    const out = await page.textContent('#output');
    expect(out.includes(want), `output ${JSON.stringify(out)}, want ${want}`);
    expect(r.badges.status === 'Completed', `status ${r.badges.status}`);
    expect(r.badges.exit === 'exit 0', `exit ${r.badges.exit}`);
    for (const b of ['cpu', 'wall', 'memory']) expect(/\d/.test(r.badges[b] ?? ''), `no ${b} badge: ${JSON.stringify(r.badges)}`);
    noProblems(page);
  });
}

check('stdin and arguments reach the program', async () => {
  const page = await open();
  await pick(page, 'python3');
  await setCode(page, 'import sys\nprint(sys.stdin.read().upper(), sys.argv[1:])');
  await page.fill('#stdin', 'ada');
  await page.fill('#args', 'one "two words"');
  await page.click('#run');
  await result(page);
  const out = await page.textContent('#output');
  expect(out.includes("ADA ['one', 'two words']"), `output ${JSON.stringify(out)}`);
});

check('streamed lines appear before the program ends', async () => {
  const page = await open();
  await pick(page, 'python3');
  await setCode(page, 'import time\nprint("first line", flush=True)\ntime.sleep(1.5)\nprint("second line")');
  const t0 = Date.now();
  await page.click('#run');
  const seen = await (await page.waitForFunction(() => {
    const out = document.getElementById('output').textContent;
    return out.includes('first line') && {
      second: out.includes('second line'),
      ended: document.querySelector('#badges [data-badge="status"]') !== null,
    };
  }, null, { timeout: 60_000, polling: 20 })).jsonValue();
  const t1 = Date.now();
  expect(!seen.second && !seen.ended, `the first line came with the end of the run: ${JSON.stringify(seen)}`);
  const r = await result(page);
  const t2 = Date.now();
  const out = await page.textContent('#output');
  expect(out.includes('second line') && r.badges.status === 'Completed', `after the run: ${JSON.stringify(out)} ${r.badges.status}`);
  expect(t2 - t1 >= 1000, `the first line showed ${t1 - t0} ms after Run, the result ${t2 - t1} ms later: want the 1.5 s sleep between them`);
  return { first_ms: t1 - t0, result_after_ms: t2 - t1 };
});

check('an example from the menu runs, and Stop stops it', async () => {
  const page = await open();
  await pick(page, 'python3');
  await page.selectOption('#example', { label: 'Count slowly' });
  expect((await editorText(page)).includes('tick'), `the example did not load: ${await editorText(page)}`);
  await page.click('#run');
  await page.waitForFunction(() => document.getElementById('output').textContent.includes('tick 1'), null, { timeout: 60_000 });
  await page.click('#stop');
  await page.waitForFunction(() => document.getElementById('run').textContent === 'Run');
  const out = await page.textContent('#output');
  expect(out.includes('Stopped.') && !out.includes('done'), `after Stop: ${JSON.stringify(out)}`);
  expect(await page.$('#badges [data-badge="status"]') === null, 'a stopped run showed a result');
});

check('a C compile error is shown as one', async () => {
  const page = await open();
  await pick(page, 'c');
  await setCode(page, 'int main(void) { return missing; }');
  await page.click('#run');
  const r = await result(page);
  expect(r.badges.status === 'Compile error', `status ${r.badges.status}`);
  expect(/error/.test(r.compile) && r.compile.includes('missing'), `compiler output ${JSON.stringify(r.compile)}`);
});

check('a session keeps state between executions', async () => {
  const page = await open();
  await pick(page, 'python3');
  await page.check('input[name="mode"][value="session"]');
  await page.click('#session-start');
  await page.waitForFunction(() => /Session sess_/.test(document.getElementById('session-info').textContent));
  expect(await page.isDisabled('#language'), 'the language can change under an open session');
  await setCode(page, 'x = 21');
  await page.click('#run');
  await result(page, '#history li[data-execution="1"]');
  await setCode(page, 'print(x * 2)');
  await page.click('#run');
  await result(page, '#history li[data-execution="2"]');
  const history = await page.$$eval('#history li', (lis) => lis.map((li) => ({
    input: li.querySelector('.input').textContent, output: li.querySelector('.output').textContent,
  })));
  expect(history.length === 2, `history ${JSON.stringify(history)}`);
  expect(history[0].input === 'x = 21' && history[1].input === 'print(x * 2)', `inputs ${JSON.stringify(history)}`);
  expect(history[1].output.trim() === '42', `the second execution printed ${JSON.stringify(history[1].output)}, want 42 from the first's x`);
  await page.click('#session-close');
  await page.waitForFunction(() => /closed after 2 executions/.test(document.getElementById('session-info').textContent));
  expect(!(await page.isDisabled('#language')), 'the language stays locked after the session closed');
  noProblems(page);
});

check('a share link restores the language and the program', async () => {
  const page = await open();
  await pick(page, 'javascript');
  const code = 'const s = "ünïcode & <tags>";\nconsole.log(s)';
  await setCode(page, code);
  await page.fill('#stdin', 'some input');
  await page.click('#share');
  const link = await page.inputValue('#share-link');
  expect(link.startsWith(`${base}/#p=`), `share link ${link}`);
  const shared = await open({ url: link });
  expect(await shared.inputValue('#language') === 'javascript', `language ${await shared.inputValue('#language')}`);
  const text = await editorText(shared);
  // The editor closed the quote it was typed with: the text is what the
  // first page's editor held.
  expect(text === await editorText(page), `restored ${JSON.stringify(text)}`);
  expect(text.includes('ünïcode & <tags>'), `restored ${JSON.stringify(text)}`);
  expect(await shared.inputValue('#stdin') === 'some input', 'stdin not restored');
});

check('a bad key is a 401 in plain words', async () => {
  const page = await open({ withKey: 'sk_not_a_real_key' });
  await page.waitForSelector('#notice:not([hidden])');
  const words = await page.textContent('#notice');
  expect(words.includes('Your API key was not accepted'), `notice ${JSON.stringify(words)}`);
  await page.click('#run');
  await page.waitForFunction(() => document.getElementById('run').textContent === 'Run');
  expect((await page.textContent('#notice')).includes('Your API key was not accepted'), 'no 401 words after Run');
});

check('no key asks for one', async () => {
  const page = await open({ withKey: null });
  const words = await page.textContent('#notice');
  expect(/paste your API key/i.test(words), `notice ${JSON.stringify(words)}`);
});

for (const [status, headers, body, want] of [
  [429, { 'Retry-After': '7' }, { error: { code: 'rate_limit_exceeded', message: 'rate limit exceeded' } }, 'Try again in 7 s'],
  [413, {}, { error: { code: 'payload_too_large', message: 'body over 16 MB' } }, 'too large: the limit is 16 MB'],
  [503, { 'Retry-After': '3' }, { error: { code: 'node_at_capacity', message: 'busy' } }, 'Try again in 3 s'],
]) {
  // The gateway would need a flood to answer these; the browser is told to
  // answer them instead, to see the page's words for each.
  check(`a ${status} is shown in plain words`, async () => {
    const page = await open();
    await page.route('**/v1/execute/stream', (route) => route.fulfill({
      status, headers: { 'Content-Type': 'application/json', ...headers }, body: JSON.stringify(body),
    }));
    await page.click('#run');
    await page.waitForSelector('#notice:not([hidden])');
    const words = await page.textContent('#notice');
    expect(words.includes(want), `notice ${JSON.stringify(words)}, want ${want}`);
  });
}

check('Ctrl+Enter runs, from the editor and from the input box', async () => {
  const page = await open();
  await pick(page, 'python3');
  await setCode(page, 'print(input() + "!")');
  await page.fill('#stdin', 'shortcut');
  await page.click('.cm-content');
  await page.keyboard.press('Control+Enter');
  await result(page);
  expect((await page.textContent('#output')).includes('shortcut!'), 'Ctrl+Enter in the editor did not run it');
  expect(await editorText(page) === 'print(input() + "!")', 'Ctrl+Enter changed the program');
  await page.fill('#stdin', 'again');
  await page.focus('#stdin');
  await page.keyboard.press('Control+Enter');
  await page.waitForFunction(() => document.getElementById('output').textContent.includes('again!'), null, { timeout: 60_000 });
});

check('the theme follows the system, toggles and is kept', async () => {
  const page = await open({ colorScheme: 'dark' });
  expect(await page.getAttribute('html', 'data-theme') === 'dark', 'a dark system did not get the dark theme');
  await page.click('#theme');
  expect(await page.getAttribute('html', 'data-theme') === 'light', 'the toggle did not switch to light');
  await page.reload();
  await page.waitForSelector('.cm-content');
  expect(await page.getAttribute('html', 'data-theme') === 'light', 'the choice was not kept');
});

check('a phone-width screen stacks editor and output without scrolling sideways', async () => {
  const page = await open({ viewport: { width: 390, height: 844 } });
  await page.click('#run');
  await result(page);
  const layout = await page.evaluate(() => ({
    width: document.documentElement.scrollWidth,
    editor: document.getElementById('editor').getBoundingClientRect().toJSON(),
    output: document.getElementById('output').getBoundingClientRect().toJSON(),
  }));
  expect(layout.width <= 390, `the page is ${layout.width} px wide on a 390 px screen`);
  expect(layout.output.top >= layout.editor.bottom, `the output is not below the editor: ${JSON.stringify(layout)}`);
});

if (shots) {
  check('screenshots', async () => {
    for (const [form, viewport] of [['desktop', { width: 1280, height: 800 }], ['phone', { width: 390, height: 844 }]]) {
      for (const scheme of ['light', 'dark']) {
        const page = await open({ viewport, colorScheme: scheme });
        await pick(page, 'python3');
        await page.click('#run');
        await result(page);
        await page.evaluate(() => document.activeElement?.blur());
        await page.screenshot({ path: `${shots}/playground-${form}-${scheme}.png` });
      }
    }
  });
}

console.log(JSON.stringify({ plan: checks.map((c) => c.name) }));
for (const { name, fn } of checks) {
  const start = Date.now();
  const line = { check: name };
  try {
    const extra = await fn();
    if (extra) line.detail = extra;
  } catch (err) {
    line.error = err instanceof Failure ? err.message : String(err?.stack ?? err);
  }
  line.ms = Date.now() - start;
  console.log(JSON.stringify(line));
}
for (const c of browser.contexts()) await c.close();
await browser.close();
