// Share links keep the program in the URL's fragment, which browsers never
// send to a server: #p= and the base64url of the UTF-8 JSON
// {"language", "code", "stdin", "args"}.

const prefix = '#p=';

function toBase64url(bytes) {
  let bin = '';
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replaceAll('+', '-').replaceAll('/', '_').replace(/=+$/, '');
}

function fromBase64url(text) {
  const bin = atob(text.replaceAll('-', '+').replaceAll('_', '/'));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

// shareFragment is the fragment that restores program.
export function shareFragment({ language, code, stdin, args }) {
  const json = JSON.stringify({ language, code, stdin, args });
  return prefix + toBase64url(new TextEncoder().encode(json));
}

// readFragment is the program a fragment carries, or null for one that is
// not a share link or does not decode.
export function readFragment(hash) {
  if (!hash.startsWith(prefix)) return null;
  try {
    const p = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(fromBase64url(hash.slice(prefix.length))));
    if (typeof p?.language !== 'string' || typeof p?.code !== 'string') return null;
    return {
      language: p.language, code: p.code,
      stdin: typeof p.stdin === 'string' ? p.stdin : '',
      args: typeof p.args === 'string' ? p.args : '',
    };
  } catch {
    return null;
  }
}
