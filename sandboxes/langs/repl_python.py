# The python3 session driver (see repl.go for the protocol). It runs as
# `python3 -u -c`, so its own names live in the -c script's globals; the
# session's code runs in a fresh __main__ module and never sees them.
import os, sys, io, json, types, traceback

_m = types.ModuleType('__main__'); _m.__builtins__ = __builtins__
sys.modules['__main__'] = _m
sys.path[0] = os.getcwd()


def _send(msg):
    # A rich output on fd 4, ahead of the status line: 'd', eight hex
    # digits of length, the JSON.
    b = json.dumps(msg).encode()
    b = b'd%08x' % len(b) + b
    while b:
        b = b[os.write(4, b):]


# Jupyter's _repr_*_ methods, in the order IPython's formatters try them.
_REPRS = (
    ('text/html', '_repr_html_'), ('text/markdown', '_repr_markdown_'),
    ('image/svg+xml', '_repr_svg_'), ('image/png', '_repr_png_'),
    ('image/jpeg', '_repr_jpeg_'), ('text/latex', '_repr_latex_'),
    ('application/json', '_repr_json_'), ('application/javascript', '_repr_javascript_'),
    ('application/pdf', '_repr_pdf_'),
)
_BINARY = ('image/png', 'image/jpeg', 'application/pdf')


def _as_text(mime, r):
    if isinstance(r, (bytes, bytearray)):
        if mime in _BINARY:
            import base64
            return base64.b64encode(r).decode('ascii')
        return bytes(r).decode('utf-8', 'replace')
    if (mime == 'application/json' or mime.endswith('+json')) and not isinstance(r, str):
        return json.dumps(r)
    return str(r)


class UsageError(Exception):
    """A magic the driver does not have, as IPython names the error."""


def _magic(kind, line):
    # The few IPython line magics notebook code leans on, run the way
    # IPython runs them; others are IPython's UsageError.
    sys.stdout.flush()
    sys.stderr.flush()
    if kind == '!':
        import subprocess
        subprocess.run(line, shell=True)
        return
    name, _, arg = line.partition(' ')
    arg = arg.strip()
    if name == 'matplotlib':
        return  # figures are the cell's outputs already
    if name == 'pip':
        import shlex, subprocess
        subprocess.run([sys.executable, '-m', 'pip'] + shlex.split(arg))
        return
    if name == 'cd':
        os.chdir(os.path.expanduser(arg or '~'))
        print(os.getcwd())
        return
    if name == 'env' and '=' in arg:
        k, _, v = arg.partition('=')
        os.environ[k.strip()] = v.strip()
        return
    raise UsageError('Line magic function `%%%s` not found.' % name)


def _with_magics(code):
    # Lines that start (after their indent) with ! or %: a shell command or
    # a line magic, as in a notebook. Only for a cell that is not Python
    # as it stands, so that no valid code is ever rewritten.
    out = []
    for ln in code.split('\n'):
        body = ln.lstrip()
        if body[:1] in ('!', '%') and not body.startswith('%%'):
            indent = ln[:len(ln) - len(body)]
            ln = '%s__sandboxapi_magic__(%r, %r)' % (indent, body[0], body[1:].strip())
        out.append(ln)
    return '\n'.join(out)


def _parse(code, name):
    import ast
    try:
        return ast.parse(code, name, 'exec')
    except SyntaxError:
        return None


class _Cell:
    """Runs code as a Jupyter cell does: the last expression's value and
    display() calls become rich outputs, matplotlib's figures PNGs."""

    def __init__(self, g):
        self.g = g
        self.n = 0
        self.on = False  # a display cell is running
        import builtins
        builtins.display = self.display
        builtins.__sandboxapi_magic__ = _magic
        sys.meta_path.insert(0, _MatplotlibHook(self))

    def run(self, code):
        import ast, linecache
        self.n += 1
        name = '<cell-%d>' % self.n
        # Kept, so that tracebacks of this cell's functions show its lines
        # when later cells call them.
        linecache.cache[name] = (len(code), None, code.splitlines(True), name)
        tree = _parse(code, name)
        if tree is None:
            # Not Python as it stands: with its magics, or the error of
            # its first line that is neither (the lines are the same).
            tree = ast.parse(_with_magics(code), name, 'exec')
        last = None
        if tree.body and isinstance(tree.body[-1], ast.Expr) and not code.rstrip().endswith(';'):
            last = ast.Expression(tree.body.pop().value)
        self.on = True
        try:
            exec(compile(tree, name, 'exec'), self.g)
            if last is not None:
                v = eval(compile(last, name, 'eval'), self.g)
                if v is not None:
                    self.g['_'] = v
                    self.emit(v, True)
        finally:
            try:
                self.flush_figures()
            finally:
                self.on = False

    def display(self, *objs, **kwargs):
        for o in objs:
            if self.on:
                self.emit(o, False)
            else:
                # Outside a display cell, as IPython outside a kernel: text.
                print(repr(o))

    def emit(self, v, main):
        _send({'main': main, 'data': self.bundle(v)})

    def bundle(self, v):
        data = {}
        fig = sys.modules.get('matplotlib.figure')
        if fig is not None and isinstance(v, fig.Figure):
            data['image/png'] = self.png(v)
            import matplotlib.pyplot as plt
            plt.close(v)  # shown now, not again with the cell's figures
        elif not isinstance(v, type):
            # What the object says of itself in one bundle (Altair,
            # Plotly), then each _repr_*_ method for the types it left out.
            f = getattr(v, '_repr_mimebundle_', None)
            if callable(f):
                try:
                    r = f(include=None, exclude=None)
                except Exception:
                    r = None
                if isinstance(r, tuple):  # (data, metadata)
                    r = r[0] if r else None
                if isinstance(r, dict):
                    for mime, content in r.items():
                        if isinstance(mime, str) and content is not None:
                            data[mime] = _as_text(mime, content)
            for mime, meth in _REPRS:
                if mime in data:
                    continue
                f = getattr(v, meth, None)
                if not callable(f):
                    continue
                try:
                    r = f()
                except Exception:
                    continue
                if isinstance(r, tuple):  # (data, metadata)
                    r = r[0] if r else None
                if r is not None:
                    data[mime] = _as_text(mime, r)
        if 'text/plain' not in data:
            try:
                data['text/plain'] = repr(v)
            except Exception:
                data['text/plain'] = object.__repr__(v)
        return data

    def png(self, fig):
        b = io.BytesIO()
        fig.savefig(b, format='png', bbox_inches='tight')
        return _as_text('image/png', b.getvalue())

    def flush_figures(self):
        plt = sys.modules.get('matplotlib.pyplot')
        if plt is None or not self.on:
            return
        try:
            figs = [m.canvas.figure for m in plt._pylab_helpers.Gcf.get_all_fig_managers()]
        except Exception:
            figs = [plt.figure(n) for n in plt.get_fignums()]
        for f in figs:
            _send({'main': False, 'data': {'image/png': self.png(f), 'text/plain': repr(f)}})
        plt.close('all')

    def exception(self, e):
        if isinstance(e, UsageError):
            # As IPython shows it: the magic's fault, not a frame's.
            _send({'exception': {'name': 'UsageError', 'value': str(e), 'traceback': 'UsageError: %s\n' % e}})
            return
        tb = e.__traceback__
        # The driver's frames are not the cell's: the traceback starts at
        # the cell's own, or is none for a cell that did not compile.
        while tb is not None and not tb.tb_frame.f_code.co_filename.startswith('<cell-'):
            tb = tb.tb_next
        text = ''.join(traceback.format_exception(type(e), e, tb))
        _send({'exception': {'name': type(e).__name__, 'value': str(e), 'traceback': text}})


class _MatplotlibHook:
    """Makes matplotlib, when the session's code imports it, default to
    the backend below: Agg's canvas, with a show() that puts the figures
    into the cell's outputs instead of warning that Agg cannot show.
    Only this interpreter's matplotlib: programs it starts keep theirs."""

    backend = '_sandboxapi_inline'

    def __init__(self, cell):
        self.cell = cell
        self.busy = False

    def find_spec(self, name, path=None, target=None):
        if name == self.backend:
            import importlib.util
            return importlib.util.spec_from_loader(name, self)
        if name != 'matplotlib' or self.busy:
            return None
        import importlib.util
        self.busy = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.busy = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, 'exec_module'):
            return spec
        real = spec.loader.exec_module

        def exec_module(mod):
            real(mod)
            if not os.environ.get('MPLBACKEND'):
                mod.rcParams['backend'] = 'module://' + self.backend
        spec.loader.exec_module = exec_module
        return spec

    # The backend module's loader.
    def create_module(self, spec):
        return None

    def exec_module(self, mod):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        mod.FigureCanvas = FigureCanvasAgg
        mod.show = lambda *args, **kwargs: self.cell.flush_figures()


def _sandboxapi_loop(g):
    def readn(n):
        b = b''
        while len(b) < n:
            c = os.read(3, n - len(b))
            if not c:
                os._exit(0)
            b += c
        return b
    import site, importlib
    user_site = site.getusersitepackages()
    real_stdin = sys.stdin
    cell = _Cell(g)
    while True:
        msg = json.loads(readn(int(readn(8), 16)))
        # Packages installed into the session (pip install --user) since
        # the interpreter started become importable.
        if user_site not in sys.path and os.path.isdir(user_site):
            site.addsitedir(user_site)
            importlib.invalidate_caches()
        sys.stdin = io.TextIOWrapper(io.BytesIO(msg['stdin'].encode('utf-8', 'surrogateescape')))
        status = 0
        display = msg.get('display')
        # The cell's own environment, put back as it was after it.
        env = msg.get('env') or {}
        env_saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            if display:
                cell.run(msg['code'])
            else:
                exec(compile(msg['code'], '<session>', 'exec'), g)
        except SystemExit as e:
            status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if not isinstance(e.code, (int, type(None))):
                print(e.code, file=sys.stderr)
        except BaseException as e:
            if display:
                cell.exception(e)
            else:
                sys.excepthook(type(e), e, e.__traceback__.tb_next)
            status = 1
        for k, v in env_saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        sys.stdin = real_stdin
        for f, fd in ((sys.stdout, 1), (sys.stderr, 2)):
            try:
                f.flush()
            except Exception:
                pass
            os.write(fd, msg['nonce'].encode())
        os.write(4, b'%d\n' % status)


_sandboxapi_loop(_m.__dict__)
