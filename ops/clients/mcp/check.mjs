// check.mjs is what the scripts here share: their command line, checks
// printed as JSON lines, and the programs they run.

// arg is the value after the flag name on the command line.
export function arg(name) {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

// HELLO is hello world in three languages, each printing "Hello, World!\n".
export const HELLO = {
  python3: 'print("Hello, World!")',
  javascript: 'console.log("Hello, World!")',
  c: '#include <stdio.h>\nint main(void) { printf("Hello, World!\\n"); return 0; }\n',
};

// Mismatch is a failed expectation, with what was seen.
export class Mismatch extends Error {
  constructor(message, details) {
    super(message);
    this.details = details;
  }
}

export function expect(cond, message, details) {
  if (!cond) throw new Mismatch(message, details);
}

// textOf is a tool result's text content.
export const textOf = (res) => (res.content ?? []).filter((c) => c.type === 'text').map((c) => c.text).join('\n');

let failed = 0;
let only;

// runOnly limits check to the checks whose names start with one of
// prefixes (none: all).
export function runOnly(prefixes) {
  only = prefixes;
}

// check runs fn and prints its line, {"name","ok","details"}: ok with what
// fn returned, or not ok with the error and what it saw.
export async function check(name, fn) {
  if (only && !only.some((p) => name.startsWith(p))) return;
  let line;
  try {
    line = { name, ok: true, details: (await fn()) ?? {} };
  } catch (e) {
    failed++;
    line = { name, ok: false, details: { ...(e?.details ?? {}), error: e?.message ?? String(e) } };
    if (e?.code !== undefined) line.details.code = e.code;
  }
  console.log(JSON.stringify(line));
}

// fail prints a failed check that ends the script.
export function fail(name, e) {
  console.log(JSON.stringify({ name, ok: false, details: { error: e?.message ?? String(e) } }));
  process.exit(1);
}

// exit ends the script: 1 if a check failed.
export function exit() {
  process.exit(failed ? 1 : 0);
}
