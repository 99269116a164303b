"""``python -m atelier obs cp|ls|stat|rm``: ``atelier obs`` inside a notebook.

The same placement rules as ``atelier obs cp`` (docs/storage.md): a file lands inside DST
when DST ends with ``/`` (or is a local folder), else at DST; a folder lands in
``DST/<its name>/``, or with ``-d`` its contents land in DST. It runs with the notebook
owner's storage connections through the gateway (``atelier.file``), so no keys are needed.
A file already at the destination with the same size is skipped: run it again to resume.
"""

import argparse
import concurrent.futures
import os
import sys

from . import file as af


def _is_obs(p):
    return p.startswith(("obs://", "s3://"))


def _last_name(p):
    return p.rstrip("/").rsplit("/", 1)[-1]


def _join(base, name):
    return base.rstrip("/") + "/" + name


def _same_size(src, dst, connection):
    try:
        return af.exists(dst, connection) and af.get_size(dst, connection=connection) == af.get_size(src, connection=connection)
    except OSError:
        return False


def cp(args):
    src, dst, conn = args.src, args.dst, args.connection
    if not af.exists(src, conn):
        print("no such file or folder: %s" % src, file=sys.stderr)
        return 1
    if not af.is_directory(src, conn):
        into = dst.endswith("/") or (not _is_obs(dst) and os.path.isdir(dst))
        pairs = [(src, _join(dst, _last_name(src)) if into else dst)]
    else:
        base = dst.rstrip("/") if args.drop_last_dir else _join(dst, _last_name(src))
        pairs = [(_join(src, n), _join(base, n)) for n in af.list_directory(src, recursive=True, connection=conn)]
    copied, skipped, failed = 0, 0, []

    def one(pair):
        s, d = pair
        if _same_size(s, d, conn):
            return "skipped", s, None
        try:
            af.copy(s, d, conn)
            return "copied", s, None
        except OSError as e:
            return "failed", s, e

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for what, s, e in pool.map(one, pairs):
            if what == "copied":
                copied += 1
            elif what == "skipped":
                skipped += 1
            else:
                failed.append("%s: %s" % (s, e))
    for f in failed:
        print("[FAILED] " + f, file=sys.stderr)
    print("copied %d files, %d already complete, %d failed" % (copied, skipped, len(failed)))
    return 1 if failed else 0


def ls(args):
    for name in af.list_directory(args.uri, recursive=args.recursive, connection=args.connection):
        print(name)
    return 0


def stat(args):
    st = af.stat(args.uri, args.connection)
    print("%s\t%s\t%d bytes" % (args.uri, "folder" if st.is_dir else "file", st.length))
    return 0


def rm(args):
    if args.recursive and not args.yes:
        if not sys.stdin.isatty():
            print("rm -r removes everything under %s: add --yes" % args.uri, file=sys.stderr)
            return 1
        if input("remove everything under %s? [y/N] " % args.uri).strip().lower() not in ("y", "yes"):
            return 1
    af.remove(args.uri, recursive=args.recursive, connection=args.connection)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m atelier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    top = p.add_subparsers(dest="group", required=True)
    obs = top.add_parser("obs", help="object storage").add_subparsers(dest="cmd", required=True)
    c = obs.add_parser("cp", help="copy files and folders (store <-> local, store -> store)")
    c.add_argument("src")
    c.add_argument("dst")
    c.add_argument("-d", "--drop-last-dir", action="store_true", help="copy a folder's contents only")
    c.add_argument("--jobs", type=int, default=8)
    c.set_defaults(run=cp)
    l = obs.add_parser("ls", help="list a folder")
    l.add_argument("uri")
    l.add_argument("-r", "--recursive", action="store_true")
    l.set_defaults(run=ls)
    s = obs.add_parser("stat", help="size and kind")
    s.add_argument("uri")
    s.set_defaults(run=stat)
    r = obs.add_parser("rm", help="remove an object, or a folder with -r")
    r.add_argument("uri")
    r.add_argument("-r", "--recursive", action="store_true")
    r.add_argument("--yes", action="store_true", help="no confirmation for -r")
    r.set_defaults(run=rm)
    for sub in (c, l, s, r):
        sub.add_argument("--connection", help="storage connection (default: by bucket, or your only one)")
    args = p.parse_args(argv)
    try:
        return args.run(args)
    except OSError as e:
        print(str(e), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
