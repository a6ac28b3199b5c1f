// The playground page: pick a language, edit, Run with the output streamed
// as the program writes it, or keep a session and its history; share the
// program as a link. Everything goes to the gateway that served the page.
import './style.css';
import { ApiError, Client } from './api.js';
import { Editor } from './editor.js';
import { examplesFor, examples } from './examples.js';
import { readFragment, shareFragment } from './share.js';

const $ = (id) => document.getElementById(id);
const store = {
  get: (k) => { try { return localStorage.getItem(k); } catch { return null; } },
  set: (k, v) => { try { if (v) localStorage.setItem(k, v); else localStorage.removeItem(k); } catch { /* private mode */ } },
};
const KEY = 'sandboxapi.apiKey';
const THEME = 'sandboxapi.theme';
const LANGUAGE = 'sandboxapi.language';

const ui = {
  key: $('api-key'), theme: $('theme'), language: $('language'),
  example: $('example'), stdin: $('stdin'), args: $('args'), run: $('run'), stop: $('stop'),
  sessionStart: $('session-start'), sessionClose: $('session-close'), share: $('share'),
  shareBox: $('share-box'), shareLink: $('share-link'), shareNote: $('share-note'),
  notice: $('notice'), sessionInfo: $('session-info'), badges: $('badges'), output: $('output'),
  history: $('history'), result: document.querySelector('.result'),
};

const state = {
  languages: [], // from GET /v1/languages: {id, name, version}
  drafts: {}, // language id -> {code, stdin, args}, kept while switching
  mode: 'run',
  session: null, // {id, language, executions}
  running: null, // the AbortController of the execution under way
};

const client = () => new Client(ui.key.value.trim());

// ---- notices -------------------------------------------------------------

function showNotice(err) {
  ui.notice.replaceChildren();
  const words = document.createElement('p');
  words.textContent = err instanceof ApiError ? err.message : `Something went wrong: ${err?.message ?? err}`;
  ui.notice.append(words);
  if (err instanceof ApiError && err.detail) {
    const detail = document.createElement('p');
    detail.className = 'detail';
    detail.textContent = err.detail;
    ui.notice.append(detail);
  }
  ui.notice.dataset.status = err instanceof ApiError ? String(err.status) : '';
  ui.notice.hidden = false;
}

function clearNotice() {
  ui.notice.hidden = true;
  ui.notice.replaceChildren();
}

// ---- theme ---------------------------------------------------------------

const systemDark = window.matchMedia('(prefers-color-scheme: dark)');

function applyTheme() {
  const chosen = store.get(THEME);
  const dark = chosen ? chosen === 'dark' : systemDark.matches;
  document.documentElement.dataset.theme = dark ? 'dark' : 'light';
  // The button says what it does, so it is no toggle with a state.
  ui.theme.textContent = dark ? 'Light theme' : 'Dark theme';
  ui.theme.setAttribute('aria-label', dark ? 'Switch to the light theme' : 'Switch to the dark theme');
  editor.setDark(dark);
}

// ---- languages and examples ----------------------------------------------

function fillLanguages(list, selected) {
  ui.language.replaceChildren(...list.map((l) => {
    const o = document.createElement('option');
    o.value = l.id;
    o.textContent = l.version ? `${l.name} ${l.version}` : l.name;
    return o;
  }));
  ui.language.value = list.some((l) => l.id === selected) ? selected : list[0]?.id ?? '';
}

function fillExamples(id) {
  const list = examplesFor(id);
  ui.example.replaceChildren(...[{ name: 'Choose an example…' }, ...list].map((e, i) => {
    const o = document.createElement('option');
    o.value = i === 0 ? '' : String(i - 1);
    o.textContent = e.name;
    return o;
  }));
  ui.example.disabled = list.length === 0;
}

function loadProgram({ code, stdin, args }) {
  editor.code = code;
  ui.stdin.value = stdin ?? '';
  ui.args.value = args ?? '';
}

function firstExample(id) {
  const [first] = examplesFor(id);
  return first ? { code: first.code, stdin: first.stdin ?? '', args: first.args ?? '' } : { code: '', stdin: '', args: '' };
}

// switchLanguage keeps what was written for the old language and brings
// back what was written for the new one (else its first example).
function switchLanguage(id, program) {
  const old = ui.language.dataset.current;
  if (old) state.drafts[old] = { code: editor.code, stdin: ui.stdin.value, args: ui.args.value };
  ui.language.value = id;
  ui.language.dataset.current = id;
  store.set(LANGUAGE, id);
  editor.setLanguage(id);
  fillExamples(id);
  loadProgram(program ?? state.drafts[id] ?? firstExample(id));
}

async function loadLanguages() {
  try {
    const list = await client().languages();
    state.languages = list;
    const current = ui.language.dataset.current;
    fillLanguages(list, current);
    if (ui.language.value !== current) switchLanguage(ui.language.value);
    clearNotice();
  } catch (err) {
    showNotice(err);
  }
}

// ---- output --------------------------------------------------------------

const statusWords = {
  completed: 'Completed',
  compilation_error: 'Compile error',
  runtime_error: 'Runtime error',
  timeout: 'Time limit exceeded',
  memory_limit: 'Memory limit exceeded',
  wrong_answer: 'Wrong answer',
  internal_error: 'Internal error',
};

function badge(kind, text, title) {
  const b = document.createElement('span');
  b.className = `badge ${kind}`;
  b.dataset.badge = kind;
  b.textContent = text;
  if (title) b.title = title;
  return b;
}

function badgesOf(r) {
  const ok = r.status === 'completed';
  const list = [badge('status', statusWords[r.status] ?? r.status, `status: ${r.status}`)];
  list[0].classList.add(ok ? 'ok' : 'bad');
  if (r.exit_code != null) list.push(badge('exit', `exit ${r.exit_code}${r.exit_signal ? ` (signal ${r.exit_signal})` : ''}`, 'exit code'));
  if (r.execution_time_ms != null) list.push(badge('cpu', `CPU ${r.execution_time_ms} ms`, 'CPU time of the program'));
  if (r.wall_time_ms != null) list.push(badge('wall', `wall ${r.wall_time_ms} ms`, 'wall-clock time'));
  if (r.memory_used_kb != null) list.push(badge('memory', `memory ${(r.memory_used_kb / 1024).toFixed(1)} MB`, 'peak memory'));
  return list;
}

function append(pre, kind, text) {
  if (!text) return;
  const last = pre.lastElementChild;
  if (last && last.dataset.stream === kind) {
    last.append(text);
  } else {
    const s = document.createElement('span');
    s.className = kind;
    s.dataset.stream = kind;
    s.textContent = text;
    pre.append(s);
  }
  pre.scrollTop = pre.scrollHeight;
}

// finish shows what a result adds to the streamed output: the compiler's
// output, the output itself when nothing streamed, the message.
function finish(pre, badges, r, streamed) {
  if (r.status === 'compilation_error' || (r.compile_output && r.status !== 'completed')) {
    append(pre, 'compile', r.compile_output || 'The compiler failed without saying why.');
  }
  if (!streamed) {
    append(pre, 'stdout', r.stdout);
    append(pre, 'stderr', r.stderr);
  }
  if (r.message) append(pre, 'message', `\n${r.message}\n`);
  if (r.state_lost) append(pre, 'message', '\nThe session\'s interpreter was restarted: its variables are gone.\n');
  badges.replaceChildren(...badgesOf(r));
}

// ---- running -------------------------------------------------------------

function setRunning(ctrl) {
  state.running = ctrl;
  const busy = ctrl !== null;
  ui.run.disabled = busy;
  ui.run.textContent = busy ? 'Running…' : 'Run';
  ui.stop.hidden = !busy;
  ui.result.setAttribute('aria-busy', String(busy));
}

async function execute(path, body, pre, badges) {
  const ctrl = new AbortController();
  setRunning(ctrl);
  clearNotice();
  let streamed = false;
  try {
    const r = await client().stream(path, body, (stream, text) => {
      streamed = true;
      append(pre, stream, text);
    }, ctrl.signal);
    finish(pre, badges, r, streamed);
    return r;
  } catch (err) {
    if (err?.name === 'AbortError') {
      append(pre, 'message', '\nStopped.\n');
      return null;
    }
    showNotice(err);
    if (err instanceof ApiError && (err.code === 'session_not_found' || err.code === 'session_lost')) endSession(null);
    return null;
  } finally {
    setRunning(null);
  }
}

async function runOnce() {
  ui.output.replaceChildren();
  ui.badges.replaceChildren();
  const body = { language: ui.language.value, code: editor.code, stdin: ui.stdin.value };
  if (ui.args.value.trim()) body.command_line_arguments = ui.args.value;
  await execute('/v1/execute/stream', body, ui.output, ui.badges);
}

async function runInSession() {
  if (!state.session && !(await startSession())) return;
  const s = state.session;
  const entry = document.createElement('li');
  const n = s.executions + 1;
  entry.dataset.execution = String(n);
  const input = document.createElement('pre');
  input.className = 'input';
  input.dataset.prompt = `In [${n}]`;
  input.textContent = editor.code;
  const pre = document.createElement('pre');
  pre.className = 'output';
  const badges = document.createElement('div');
  badges.className = 'badges';
  entry.append(input, pre, badges);
  ui.history.append(entry);
  const body = { code: editor.code, stdin: ui.stdin.value };
  const r = await execute(`/v1/sessions/${encodeURIComponent(s.id)}/execute/stream`, body, pre, badges);
  if (r) {
    s.executions = n;
    showSession();
    // As at a REPL's prompt: the next input starts empty, the last one
    // stays in the history.
    editor.code = '';
  }
  entry.scrollIntoView({ block: 'nearest' });
}

function run() {
  if (state.running) return;
  if (state.mode === 'session') runInSession();
  else runOnce();
}

// ---- sessions ------------------------------------------------------------

function showSession() {
  const s = state.session;
  ui.sessionStart.hidden = state.mode !== 'session' || s !== null;
  ui.sessionClose.hidden = state.mode !== 'session' || s === null;
  ui.language.disabled = s !== null;
  ui.args.disabled = state.mode === 'session';
  ui.sessionInfo.hidden = state.mode !== 'session';
  ui.history.hidden = state.mode !== 'session';
  ui.output.hidden = state.mode === 'session';
  ui.badges.hidden = state.mode === 'session';
  if (s) {
    ui.sessionInfo.textContent = `Session ${s.id} (${s.language}): ${s.executions} execution${s.executions === 1 ? '' : 's'}; `
      + `variables persist between runs; it ends after ${s.idle_ttl} s idle.`;
  } else if (!ui.sessionInfo.dataset.closed) {
    ui.sessionInfo.textContent = 'No session open: Start session, or Run, opens one for the language picked.';
  }
}

async function startSession() {
  try {
    clearNotice();
    const s = await client().createSession(ui.language.value);
    state.session = { id: s.id, language: s.language, idle_ttl: s.idle_ttl, executions: s.executions ?? 0 };
    delete ui.sessionInfo.dataset.closed;
    ui.history.replaceChildren();
    showSession();
    return true;
  } catch (err) {
    showNotice(err);
    return false;
  }
}

// endSession forgets the session; words say how it ended.
function endSession(words) {
  state.session = null;
  if (words) {
    ui.sessionInfo.textContent = words;
    ui.sessionInfo.dataset.closed = 'true';
  }
  showSession();
}

async function closeSession() {
  const s = state.session;
  if (!s) return;
  state.running?.abort();
  try {
    const r = await client().closeSession(s.id);
    endSession(`Session ${s.id} closed after ${r.executions} execution${r.executions === 1 ? '' : 's'}.`);
  } catch (err) {
    if (err instanceof ApiError && err.code === 'session_not_found') {
      endSession(`Session ${s.id} had already ended.`);
    } else {
      showNotice(err);
    }
  }
}

function setMode(mode) {
  if (mode === state.mode) return;
  if (mode === 'run' && state.session) closeSession();
  state.mode = mode;
  delete ui.sessionInfo.dataset.closed;
  showSession();
}

// ---- sharing -------------------------------------------------------------

async function share() {
  const fragment = shareFragment({ language: ui.language.value, code: editor.code, stdin: ui.stdin.value, args: ui.args.value });
  history.replaceState(null, '', fragment);
  ui.shareLink.value = location.href;
  ui.shareBox.hidden = false;
  ui.shareLink.select();
  try {
    await navigator.clipboard.writeText(location.href);
    ui.shareNote.textContent = 'Copied to the clipboard.';
  } catch {
    ui.shareNote.textContent = 'Copy the link above.';
  }
}

function openShared() {
  const p = readFragment(location.hash);
  if (!p) return false;
  if (!state.languages.some((l) => l.id === p.language)) {
    state.languages.push({ id: p.language, name: p.language, version: '' });
    fillLanguages(state.languages, p.language);
  }
  switchLanguage(p.language, p);
  return true;
}

// ---- start ---------------------------------------------------------------

const editor = new Editor($('editor'), { onRun: run });

// Until GET /v1/languages answers (it needs the key), the languages the
// examples know, without versions.
state.languages = Object.keys(examples).map((id) => ({ id, name: id, version: '' }));
ui.key.value = store.get(KEY) ?? '';
applyTheme();
systemDark.addEventListener('change', applyTheme);
fillLanguages(state.languages, store.get(LANGUAGE) ?? 'python3');
if (!openShared()) switchLanguage(ui.language.value);
showSession();

ui.theme.addEventListener('click', () => {
  store.set(THEME, document.documentElement.dataset.theme === 'dark' ? 'light' : 'dark');
  applyTheme();
});
ui.key.addEventListener('input', () => store.set(KEY, ui.key.value.trim()));
ui.key.addEventListener('change', loadLanguages);
ui.language.addEventListener('change', () => switchLanguage(ui.language.value));
ui.example.addEventListener('change', () => {
  const e = examplesFor(ui.language.value)[Number(ui.example.value)];
  if (e) loadProgram({ code: e.code, stdin: e.stdin, args: e.args });
  ui.example.value = '';
  editor.focus();
});
for (const radio of document.querySelectorAll('input[name="mode"]')) {
  radio.addEventListener('change', () => { if (radio.checked) setMode(radio.value); });
}
ui.run.addEventListener('click', run);
ui.stop.addEventListener('click', () => state.running?.abort());
ui.sessionStart.addEventListener('click', startSession);
ui.sessionClose.addEventListener('click', closeSession);
ui.share.addEventListener('click', share);
window.addEventListener('hashchange', openShared);
// Ctrl/Cmd+Enter anywhere on the page; the editor handles its own (and
// marks the event handled).
document.addEventListener('keydown', (e) => {
  if ((e.ctrlKey || e.metaKey) && e.key === 'Enter' && !e.defaultPrevented) {
    e.preventDefault();
    run();
  }
});

if (ui.key.value) loadLanguages();
else showNotice(new ApiError('Paste your API key into the API key box at the top to run programs. (`sandboxapi dev` prints one when it starts.)'));
