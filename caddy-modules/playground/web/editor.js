// The code editor: CodeMirror 6 with the highlighting of the picked
// language and the page's theme, each in a compartment so that either can
// change without losing the text or the undo history.
import { basicSetup, EditorView } from 'codemirror';
import { Compartment, EditorState, Prec, Transaction } from '@codemirror/state';
import { keymap } from '@codemirror/view';
import { indentUnit, StreamLanguage } from '@codemirror/language';
import { indentWithTab } from '@codemirror/commands';
import { python } from '@codemirror/lang-python';
import { javascript } from '@codemirror/lang-javascript';
import { cpp } from '@codemirror/lang-cpp';
import { go } from '@codemirror/lang-go';
import { java } from '@codemirror/lang-java';
import { php } from '@codemirror/lang-php';
import { rust } from '@codemirror/lang-rust';
import { shell } from '@codemirror/legacy-modes/mode/shell';
import { ruby } from '@codemirror/legacy-modes/mode/ruby';
import { csharp } from '@codemirror/legacy-modes/mode/clike';
import { oneDark } from '@codemirror/theme-one-dark';

// highlighting by language id; an id not here is plain text.
const highlighting = {
  python3: () => python(),
  javascript: () => javascript(),
  typescript: () => javascript({ typescript: true }),
  c: () => cpp(),
  cpp: () => cpp(),
  go: () => go(),
  java: () => java(),
  php: () => php(),
  rust: () => rust(),
  bash: () => StreamLanguage.define(shell),
  ruby: () => StreamLanguage.define(ruby),
  csharp: () => StreamLanguage.define(csharp),
};

// Go is indented with tabs, the rest with four spaces (two for Ruby).
const indents = { go: '\t', ruby: '  ', javascript: '  ', typescript: '  ' };

const lightTheme = EditorView.theme({}, { dark: false });

// A no-break space (U+00A0) typed or pasted into code is always a
// mistake — code copied from a web page carries them, and Chromium's
// editing puts them where a space was typed next to a word — and breaks
// it in ways that are hard to see ("invalid non-printable character
// U+00A0"). Input is taken with plain spaces instead; the replacement
// has the same length, so the selection stays where it was.
const plainSpaces = EditorState.transactionFilter.of((tr) => {
  if (!tr.docChanged || !tr.isUserEvent('input')) return tr;
  const changes = [];
  let found = false;
  tr.changes.iterChanges((from, to, _fromB, _toB, inserted) => {
    const text = inserted.toString();
    found ||= text.includes('\u00a0');
    changes.push({ from, to, insert: text.replaceAll('\u00a0', ' ') });
  });
  if (!found) return tr;
  return [{
    changes, selection: tr.selection, effects: tr.effects, scrollIntoView: tr.scrollIntoView,
    annotations: Transaction.userEvent.of(tr.annotation(Transaction.userEvent)),
  }];
});

// Editor wraps one EditorView.
export class Editor {
  // onRun is called for Ctrl/Cmd+Enter.
  constructor(parent, { onRun }) {
    this.language = new Compartment();
    this.indent = new Compartment();
    this.theme = new Compartment();
    this.view = new EditorView({
      parent,
      state: EditorState.create({
        doc: '',
        extensions: [
          // Before basicSetup's own Mod-Enter (insert a blank line).
          Prec.highest(keymap.of([{ key: 'Mod-Enter', run: () => { onRun(); return true; } }])),
          basicSetup,
          plainSpaces,
          // The page's style nonce (its Content-Security-Policy), for the
          // <style> elements CodeMirror adds.
          EditorView.cspNonce.of(document.querySelector('meta[name="csp-nonce"]')?.content ?? ''),
          keymap.of([indentWithTab]),
          this.language.of([]),
          this.indent.of(indentUnit.of('    ')),
          this.theme.of(lightTheme),
          EditorView.contentAttributes.of({ 'aria-label': 'Program source' }),
        ],
      }),
    });
  }

  get code() {
    return this.view.state.doc.toString();
  }

  set code(text) {
    this.view.dispatch({ changes: { from: 0, to: this.view.state.doc.length, insert: text } });
  }

  setLanguage(id) {
    const make = highlighting[id];
    this.view.dispatch({
      effects: [
        this.language.reconfigure(make ? make() : []),
        this.indent.reconfigure(indentUnit.of(indents[id] ?? '    ')),
      ],
    });
  }

  setDark(dark) {
    this.view.dispatch({ effects: this.theme.reconfigure(dark ? oneDark : lightTheme) });
  }

  focus() {
    this.view.focus();
  }
}
