// The API as the page uses it: the gateway that served the page, with the
// person's key in X-API-Key (docs/api.md#authentication).

// ApiError is a refusal or failure, with the words to show the person.
export class ApiError extends Error {
  constructor(words, { status = 0, code = '', detail = '' } = {}) {
    super(words);
    this.status = status;
    this.code = code;
    this.detail = detail;
  }
}

// seconds turns a Retry-After into words: "12 s", "3 min", "5 h".
export function inWords(seconds) {
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 90 * 60) return `${Math.round(seconds / 60)} min`;
  if (seconds < 36 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

// retryAfter reads Retry-After (seconds, or an HTTP date) as seconds.
export function retryAfter(value, now = Date.now()) {
  if (!value) return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

// plainWords says what an API error means for the person at the page.
// status and retry come from the answer, code and message from its
// {"error": {"code", "message"}} body (docs/api.md#errors); status 0 is
// a stream's error event, which comes after its 200.
export function plainWords(status, code, message, retry) {
  const again = retry != null ? ` Try again in ${inWords(retry)}.` : ' Try again in a moment.';
  switch (code) {
    case 'missing_api_key':
      return 'This needs an API key: paste yours into the API key box at the top. (`sandboxapi dev` prints one when it starts.)';
    case 'invalid_api_key':
      return 'Your API key was not accepted. Check the key in the API key box: it may be mistyped, or revoked.';
    case 'monthly_quota_exceeded':
      return `Your account has used up its executions for this month.${retry != null ? ` They start again in ${inWords(retry)}.` : ''}`;
    case 'rate_limit_exceeded':
      return `Too many requests at once for your plan.${again}`;
    case 'session_limit_reached':
      return 'You have as many sessions open as your plan allows: close one, or wait for one to expire.';
    case 'too_many_connections':
      return `Too many connections from your address.${again}`;
    case 'code_too_large':
      return 'The program is too large: the limit is 1 MB of code.';
    case 'payload_too_large':
      return 'The program and its input are too large: the limit is 16 MB per request.';
    case 'session_not_found':
      return 'The session has ended (it was closed, or idle too long): start a new one.';
    case 'session_lost':
      return 'The server that held the session stopped, and the session with it: start a new one.';
    case 'queue_timeout':
      return 'No sandbox became free within 30 seconds: the service is busy. Try again.';
    case 'account_suspended':
      return `Your account is suspended: ${message}`;
  }
  switch (true) {
    case status === 0:
      // An error event, after the stream had begun (its answer was a 200).
      return `The run failed on the service's side: ${message || code}.${again}`;
    case status === 401:
      return 'Your API key was not accepted. Check the key in the API key box.';
    case status === 403:
      return `Your plan does not allow this: ${message}`;
    case status === 413:
      return 'The program or its input is too large (limits: 1 MB of code, 16 MB per request).';
    case status === 429:
      return `Too many requests.${again}`;
    case status >= 400 && status < 500:
      return `The request was refused: ${message}`;
    case status === 503:
      return `The service cannot run this right now.${again}`;
    default:
      return `The service had a problem (HTTP ${status}).${again}`;
  }
}

// errorOf builds the ApiError of an answer that is not a success.
export async function errorOf(resp) {
  let code = '';
  let message = '';
  try {
    const body = await resp.json();
    code = body?.error?.code ?? '';
    message = body?.error?.message ?? '';
  } catch {
    // Not the API's JSON (a proxy's page): the status alone speaks.
  }
  const retry = retryAfter(resp.headers.get('Retry-After'));
  return new ApiError(plainWords(resp.status, code, message, retry), {
    status: resp.status, code, detail: [resp.status, code, message].filter(Boolean).join(' '),
  });
}

function unreachable(err) {
  return new ApiError('Could not reach the API: check your connection, or that the service is running.', {
    detail: String(err?.message ?? err),
  });
}

// Client calls the API with one key.
export class Client {
  constructor(key) {
    this.key = key;
  }

  headers(json) {
    const h = {};
    if (this.key) h['X-API-Key'] = this.key;
    if (json) h['Content-Type'] = 'application/json';
    return h;
  }

  async request(method, path, body, signal) {
    let resp;
    try {
      resp = await fetch(path, {
        method, signal, headers: this.headers(body !== undefined),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (err?.name === 'AbortError') throw err;
      throw unreachable(err);
    }
    if (!resp.ok) throw await errorOf(resp);
    return resp;
  }

  async json(method, path, body) {
    const resp = await this.request(method, path, body);
    return resp.json();
  }

  languages() {
    return this.json('GET', '/v1/languages');
  }

  createSession(language) {
    return this.json('POST', '/v1/sessions', { language });
  }

  closeSession(id) {
    return this.json('DELETE', `/v1/sessions/${encodeURIComponent(id)}`);
  }

  // stream POSTs body to path (/v1/execute/stream, or a session's) and
  // calls onOutput(stream, text) for each stdout and stderr event as it
  // comes; it resolves with the result event's JSON. An error event is
  // thrown as an ApiError.
  async stream(path, body, onOutput, signal) {
    const resp = await this.request('POST', path, body, signal);
    if (!(resp.headers.get('Content-Type') ?? '').startsWith('text/event-stream')) {
      // A door that answered without streaming: the result itself.
      return resp.json();
    }
    let result = null;
    let failure = null;
    try {
      for await (const ev of events(resp.body)) {
        const data = ev.data ? JSON.parse(ev.data) : {};
        if (ev.event === 'stdout' || ev.event === 'stderr') onOutput(ev.event, data.data ?? '');
        else if (ev.event === 'result') result = data;
        else if (ev.event === 'error') {
          const code = data?.error?.code ?? '';
          const message = data?.error?.message ?? '';
          failure = new ApiError(plainWords(0, code, message, null), { status: 200, code, detail: `${code} ${message}` });
        }
      }
    } catch (err) {
      if (err?.name === 'AbortError') throw err;
      throw new ApiError('The connection broke before the program finished.', { detail: String(err?.message ?? err) });
    }
    if (failure) throw failure;
    if (!result) throw new ApiError('The stream ended without a result: the connection was cut.');
    return result;
  }
}

// events parses a server-sent event stream
// (https://html.spec.whatwg.org/multipage/server-sent-events.html) from a
// ReadableStream of bytes: EventSource cannot POST. Comments (the
// keep-alives) are skipped.
export async function* events(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let ev = { event: 'message', data: '', id: '' };
  let hasData = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) {
      // A CR that ends the stream ends its line: no LF is coming.
      if (!buf.endsWith('\r')) break;
      buf = `${buf.slice(0, -1)}\n`;
    } else {
      buf += value;
    }
    let nl;
    while ((nl = buf.search(/\r\n|\r|\n/)) >= 0) {
      const line = buf.slice(0, nl);
      // A lone \r at the end of the buffer may be the first half of \r\n.
      if (buf[nl] === '\r' && nl + 1 === buf.length) break;
      buf = buf.slice(nl + (buf.startsWith('\r\n', nl) ? 2 : 1));
      if (line === '') {
        if (hasData) yield ev;
        ev = { event: 'message', data: '', id: '' };
        hasData = false;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') ev.event = value;
      else if (field === 'id') ev.id = value;
      else if (field === 'data') {
        ev.data = hasData ? `${ev.data}\n${value}` : value;
        hasData = true;
      }
    }
    if (done) break;
  }
}
