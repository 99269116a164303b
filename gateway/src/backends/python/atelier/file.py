"""Object storage from inside a notebook: what MoXing's ``mox.file`` users rely on.

    import atelier.file as af
    af.copy('obs://bucket/data.csv', '/home/ma-user/work/data.csv')
    af.copy_parallel('obs://bucket/train/', '/home/ma-user/work/train/')
    af.list_directory('obs://bucket/train/', recursive=True)
    af.write('obs://bucket/out/log.txt', 'done\\n'); af.append('obs://bucket/out/log.txt', 'more\\n')

Paths are ``obs://bucket/key`` or ``s3://bucket/key`` (the object store) or local paths; every
function takes both. The notebook holds no credentials: calls go to the gateway over the
socket in ``ATELIER_STORAGE_SOCKET`` (the notebook's agent relays them over the gateway's
link to the notebook), which acts with the notebook owner's storage
connections (the one whose bucket the path names, or their only one; choose another with
``set_connection(name)``, ``connection=...`` or ``ATELIER_STORAGE_CONNECTION``).
"""

import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import time
import urllib.parse

__all__ = [
    "StorageError", "set_connection", "exists", "is_directory", "get_size", "stat",
    "list_directory", "make_dirs", "remove", "read", "write", "append", "copy",
    "copy_parallel",
]

_connection = os.environ.get("ATELIER_STORAGE_CONNECTION") or None


class StorageError(OSError):
    """The gateway or the store refused the operation; the message says why."""


class FileStat:
    """What ``stat`` returns: ``length`` in bytes and ``is_dir``."""

    def __init__(self, length, is_dir):
        self.length = length
        self.is_dir = is_dir

    def __repr__(self):
        return "FileStat(length=%d, is_dir=%s)" % (self.length, self.is_dir)


def set_connection(name):
    """Use storage connection ``name`` for the calls that follow (None: choose by bucket)."""
    global _connection
    _connection = name


def _is_obs(path):
    return isinstance(path, str) and path.startswith(("obs://", "s3://"))


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=600)
        self._path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        if len(self._path) < 100:
            s.connect(self._path)
        else:
            # Longer than a socket address holds: through the directory's descriptor.
            fd = os.open(os.path.dirname(self._path), os.O_RDONLY | os.O_DIRECTORY)
            try:
                s.connect("/proc/self/fd/%d/%s" % (fd, os.path.basename(self._path)))
            finally:
                os.close(fd)
        self.sock = s


# How long a call waits for the gateway's link to the notebook (a restarted gateway opens
# it again within seconds) before it fails.
_LINK_WAIT = 30.0


def _connect(path, service="object storage"):
    """A connection to the file API (and the workflows' API, ``atelier.workflow``). The socket
    is the notebook's agent's, there while the gateway is linked to the notebook; a call made
    while it is not waits a little."""
    deadline = time.monotonic() + _LINK_WAIT
    while True:
        conn = _UnixConnection(path)
        try:
            conn.connect()
            return conn
        except (FileNotFoundError, ConnectionRefusedError):
            conn.close()
            if time.monotonic() >= deadline:
                raise StorageError(
                    "%s is not served in this notebook right now (the gateway "
                    "is not linked to it); try again in a moment, or restart the notebook"
                    % service
                ) from None
            time.sleep(0.2)


def _call(method, route, params, body=None, length=None, stream=False, connection=None):
    path = os.environ.get("ATELIER_STORAGE_SOCKET")
    if not path:
        raise StorageError(
            "object storage is not served in this notebook (no ATELIER_STORAGE_SOCKET); "
            "restart the notebook, or ask the operator whether object storage is set up"
        )
    query = {k: v for k, v in params.items() if v is not None}
    name = connection or _connection
    if name:
        query["connection"] = name
    conn = _connect(path)
    headers = {}
    if length is not None:
        headers["Content-Length"] = str(length)
    conn.request(method, route + "?" + urllib.parse.urlencode(query), body=body, headers=headers)
    resp = conn.getresponse()
    if resp.status >= 400:
        data = resp.read()
        conn.close()
        try:
            message = json.loads(data).get("error") or data.decode()
        except ValueError:
            message = data.decode(errors="replace")
        if resp.status == 404:
            raise FileNotFoundError(message)
        raise StorageError(message)
    if stream:
        return conn, resp
    data = resp.read()
    conn.close()
    return json.loads(data) if data else None


def _stat(url, connection=None):
    return _call("GET", "/stat", {"uri": url}, connection=connection)


def exists(url, connection=None):
    """Whether the object or folder (or local path) exists."""
    if not _is_obs(url):
        return os.path.exists(url)
    return _stat(url, connection)["exists"]


def is_directory(url, connection=None):
    """Whether it is a folder: a prefix with objects under it (or its marker)."""
    if not _is_obs(url):
        return os.path.isdir(url)
    return _stat(url, connection)["is_dir"]


def stat(url, connection=None):
    """``FileStat(length, is_dir)``; FileNotFoundError when nothing is there."""
    if not _is_obs(url):
        st = os.stat(url)
        return FileStat(st.st_size, os.path.isdir(url))
    s = _stat(url, connection)
    if not s["exists"]:
        raise FileNotFoundError(url)
    return FileStat(s["size"], s["is_dir"])


def list_directory(url, recursive=False, connection=None):
    """Names in a folder: files and sub-folders; with ``recursive`` every file's relative path."""
    if not _is_obs(url):
        if not recursive:
            return sorted(os.listdir(url))
        out = []
        for root, _, files in os.walk(url):
            for f in files:
                out.append(os.path.relpath(os.path.join(root, f), url))
        return sorted(out)
    items = _call("GET", "/list", {"uri": url, "recursive": "1" if recursive else None},
                  connection=connection)["items"]
    return sorted(i["name"] for i in items)


def get_size(url, recursive=False, connection=None):
    """Bytes of an object, or with ``recursive`` of everything in a folder."""
    if not _is_obs(url):
        if recursive and os.path.isdir(url):
            return sum(os.path.getsize(os.path.join(url, f))
                       for f in list_directory(url, recursive=True))
        return os.path.getsize(url)
    if recursive:
        items = _call("GET", "/list", {"uri": url, "recursive": "1"}, connection=connection)["items"]
        if items:
            return sum(i["size"] for i in items)
    return stat(url, connection).length


def make_dirs(url, connection=None):
    """A folder (and its parents locally; a folder marker in the store)."""
    if not _is_obs(url):
        os.makedirs(url, exist_ok=True)
        return
    _call("POST", "/mkdir", {"uri": url}, connection=connection)


def remove(url, recursive=False, connection=None):
    """Deletes an object, or with ``recursive`` a folder and everything in it."""
    if not _is_obs(url):
        if recursive and os.path.isdir(url):
            shutil.rmtree(url)
        else:
            os.remove(url)
        return
    _call("DELETE", "/remove", {"uri": url, "recursive": "1" if recursive else None},
          connection=connection)


def read(url, binary=False, connection=None):
    """The whole object: ``str`` (UTF-8), or ``bytes`` with ``binary``."""
    if not _is_obs(url):
        with open(url, "rb") as f:
            data = f.read()
    else:
        conn, resp = _call("GET", "/read", {"uri": url}, stream=True, connection=connection)
        try:
            data = resp.read()
        finally:
            conn.close()
    return data if binary else data.decode("utf-8")


def _bytes(content):
    return content.encode("utf-8") if isinstance(content, str) else bytes(content)


def write(url, content, binary=False, connection=None):
    """Replaces the object (or file) with ``content`` (``str`` or bytes)."""
    data = _bytes(content)
    if not _is_obs(url):
        with open(url, "wb") as f:
            f.write(data)
        return
    _call("PUT", "/write", {"uri": url}, body=data, length=len(data), connection=connection)


def append(url, content, binary=False, connection=None):
    """Adds ``content`` at the end (object stores rewrite the object to do it)."""
    data = _bytes(content)
    if not _is_obs(url):
        with open(url, "ab") as f:
            f.write(data)
        return
    _call("PUT", "/write", {"uri": url, "append": "1"}, body=data, length=len(data),
          connection=connection)


def copy(src_url, dst_url, connection=None):
    """One file: store → local, local → store, store → store (in the store), or local."""
    src_obs, dst_obs = _is_obs(src_url), _is_obs(dst_url)
    if src_obs and dst_obs:
        _call("POST", "/copy", {"src": src_url, "dst": dst_url}, connection=connection)
    elif src_obs:
        parent = os.path.dirname(dst_url)
        if parent:
            os.makedirs(parent, exist_ok=True)
        conn, resp = _call("GET", "/read", {"uri": src_url}, stream=True, connection=connection)
        try:
            tmp = dst_url + ".atelier-partial"
            with open(tmp, "wb") as f:
                shutil.copyfileobj(resp, f, 1024 * 1024)
            os.replace(tmp, dst_url)
        finally:
            conn.close()
    elif dst_obs:
        with open(src_url, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            _call("PUT", "/write", {"uri": dst_url}, body=f, length=size, connection=connection)
    else:
        shutil.copyfile(src_url, dst_url)


def copy_parallel(src_url, dst_url, threads=8, connection=None):
    """A folder and everything in it, ``threads`` files at a time."""
    if _is_obs(src_url) and _is_obs(dst_url):
        _call("POST", "/copy", {"src": src_url, "dst": dst_url, "recursive": "1"},
              connection=connection)
        return
    names = list_directory(src_url, recursive=True, connection=connection)
    join = lambda base, name: base.rstrip("/") + "/" + name
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        jobs = [pool.submit(copy, join(src_url, n), join(dst_url, n), connection) for n in names]
        for j in jobs:
            j.result()
