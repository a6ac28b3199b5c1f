# A directory watcher for envd's WatchDir, run as the sandbox's user:
# inotify through ctypes (every sandbox has python3, none inotifywait).
# argv: the directory, "1" to watch its subdirectories too. It prints one
# JSON object a line: {"ready": true} once the watches are in place, then
# {"name": path relative to the directory, "type": ...} per event, with
# fsnotify's names for them, as envd reports them.
import ctypes, json, os, struct, sys

root, recursive = sys.argv[1], sys.argv[2] == "1"
if not os.path.lexists(root):
    print("no such directory: " + root, file=sys.stderr)
    sys.exit(44)
if not os.path.isdir(root):
    print("not a directory: " + root, file=sys.stderr)
    sys.exit(46)

IN_MODIFY, IN_ATTRIB, IN_MOVED_FROM, IN_MOVED_TO = 0x2, 0x4, 0x40, 0x80
IN_CREATE, IN_DELETE, IN_Q_OVERFLOW, IN_IGNORED = 0x100, 0x200, 0x4000, 0x8000
IN_ONLYDIR, IN_ISDIR = 0x01000000, 0x40000000
MASK = IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE

libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(os.O_CLOEXEC)
if fd < 0:
    print("inotify: " + os.strerror(ctypes.get_errno()), file=sys.stderr)
    sys.exit(1)
dirs = {}


def watch(d):
    wd = libc.inotify_add_watch(fd, os.fsencode(d), MASK | IN_ONLYDIR)
    if wd >= 0:
        dirs[wd] = d
    elif d == root:
        print("watch %s: %s" % (d, os.strerror(ctypes.get_errno())), file=sys.stderr)
        sys.exit(1)


def watch_tree(d):
    watch(d)
    if recursive:
        for top, subdirs, _ in os.walk(d):
            for s in subdirs:
                watch(os.path.join(top, s))


def emit(v):
    sys.stdout.write(json.dumps(v) + "\n")
    sys.stdout.flush()


watch_tree(root)
emit({"ready": True})
while True:
    buf = os.read(fd, 1 << 16)
    i = 0
    while i + 16 <= len(buf):
        wd, mask, _, n = struct.unpack_from("iIII", buf, i)
        name = buf[i + 16:i + 16 + n].rstrip(b"\0")
        i += 16 + n
        if mask & IN_Q_OVERFLOW:
            print("watch: events were lost (the queue overflowed)", file=sys.stderr)
            continue
        d = dirs.get(wd)
        if d is None:
            continue
        if mask & IN_IGNORED:
            del dirs[wd]
            continue
        p = os.path.join(d, os.fsdecode(name)) if name else d
        if mask & (IN_CREATE | IN_MOVED_TO):
            kind = "create"
            if recursive and mask & IN_ISDIR:
                watch_tree(p)
        elif mask & IN_MODIFY:
            kind = "write"
        elif mask & IN_DELETE:
            kind = "remove"
        elif mask & IN_MOVED_FROM:
            kind = "rename"
        elif mask & IN_ATTRIB:
            kind = "chmod"
        else:
            continue
        emit({"name": os.path.relpath(p, root), "type": kind})
