"""A local, Hub-shaped HTTP server for downloads: what huggingface_hub 2.4.0 asks, answered like
huggingface.co answers it, from a directory of repos (`<root>/<org>/<name>/<files>`).

Endpoints (as the real client sends them; see huggingface_hub's hf_api.py and file_download.py):

- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (`model_info`; ``?blobs=true``
  adds size, blobId and lfs {sha256, size, pointerSize} to each sibling)
- ``POST /api/models/{repo}/paths-info/{rev}`` (`get_paths_info`, form body ``paths=..&expand=..``)
- ``GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=..`` (`list_repo_tree`)
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: small (git) files answer 200 with ETag = git blob sha1;
  LFS files (``filter=lfs`` patterns of the repo's .gitattributes, else *.gguf/*.safetensors/*.bin)
  answer 302 with X-Repo-Commit, ETag and X-Linked-Etag = sha256, X-Linked-Size, to a "CDN" path
  ``/cdn/{sha256}/{repo}/{path}`` on a second port, so the redirect leaves the Hub's origin exactly
  as a redirect to cdn-lfs.hf.co / the Xet bridge does (a client must not send Authorization there).
  Content is served with ``Range: bytes=N-`` / ``N-M`` (206 + Content-Range), os.sendfile when no
  fault applies, 64 KiB reads otherwise: a 60 GB file is never read into memory.

Errors carry the Hub's ``X-Error-Code`` (RepoNotFound, RevisionNotFound, EntryNotFound), so the
client raises its own typed errors. Revisions: ``main`` or the repo's commit (a sha1 of its file
list, sizes and mtimes).

Fault injection (`HubServer.faults`, or ``POST /_hubserver/faults`` with the same JSON keys):
``drop_after {file: N}`` closes the connection once the response reaches byte N of that file (once);
``status {path-substring: code}`` answers that status to every request whose path contains it;
``corrupt {file: offset}`` flips that byte in what is sent; ``rate`` bytes per second for content
(sent in 4 KiB pieces). ``file`` is the repo-relative path or the base name. The server counts
content bytes it actually handed to the socket per file (`sent`), content GETs per file (`gets`),
and logs every request (method, path, whether it carried Authorization) in `requests`.
``GET /_hubserver/stats`` returns the counters.

Script: ``python tests/hubserver.py --root DIR --port N [--host 127.0.0.1] [--cdn-port M]``.
"""
from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import os
import socket
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_DEFAULT = ("*.gguf", "*.safetensors", "*.bin", "*.pt", "*.pth", "*.onnx", "*.msgpack", "*.h5")
PIECE = 64 * 1024
SLOW_PIECE = 4 * 1024


class Faults:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self.drop_after: dict[str, int] = {}
        self.status: dict[str, int] = {}
        self.corrupt: dict[str, int] = {}
        self.rate: float = 0.0

    def update(self, data: dict[str, Any]) -> None:
        with self.lock:
            for key in ("drop_after", "status", "corrupt"):
                if key in data:
                    setattr(self, key, {str(k): int(v) for k, v in (data[key] or {}).items()})
            if "rate" in data:
                self.rate = float(data["rate"] or 0)

    @staticmethod
    def _match(table: dict[str, int], path: str) -> str | None:
        for key in table:
            if key == path or key == path.rsplit("/", 1)[-1]:
                return key
        return None

    def take_drop(self, path: str) -> int | None:
        with self.lock:
            key = self._match(self.drop_after, path)
            return self.drop_after.pop(key) if key is not None else None

    def corrupt_at(self, path: str) -> int | None:
        with self.lock:
            key = self._match(self.corrupt, path)
            return self.corrupt[key] if key is not None else None

    def status_for(self, url_path: str) -> int | None:
        with self.lock:
            for key, code in self.status.items():
                if key in url_path:
                    return code
        return None


class Repo:
    def __init__(self, root: Path, repo_id: str):
        self.id, self.dir = repo_id, root / repo_id
        patterns = []
        ga = self.dir / ".gitattributes"
        if ga.is_file():
            for line in ga.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = line.split()
                if len(parts) > 1 and "filter=lfs" in parts[1:]:
                    patterns.append(parts[0])
        self.lfs_patterns = tuple(patterns) or LFS_DEFAULT

    def files(self) -> list[str]:
        out = []
        for p in sorted(self.dir.rglob("*")):
            rel = p.relative_to(self.dir).as_posix()
            if p.is_file() and not rel.startswith(".git/"):
                out.append(rel)
        return out

    def commit(self) -> str:
        h = hashlib.sha1()
        for rel in self.files():
            st = (self.dir / rel).stat()
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def is_lfs(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return any(fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(name, p) for p in self.lfs_patterns)


class HubState:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.faults = Faults()
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}
        self.gets: dict[str, int] = {}
        self.requests: list[dict[str, Any]] = []
        self._hashes: dict[tuple[str, int, int], tuple[str, str]] = {}
        self.cdn_origin = ""

    def reset_counts(self) -> None:
        with self.lock:
            self.sent.clear()
            self.gets.clear()
            self.requests.clear()

    def count(self, rel: str, n: int) -> None:
        with self.lock:
            self.sent[rel] = self.sent.get(rel, 0) + n

    def repo(self, repo_id: str) -> Repo | None:
        if repo_id.count("/") != 1 or ".." in repo_id:
            return None
        d = self.root / repo_id
        return Repo(self.root, repo_id) if d.is_dir() else None

    def hashes(self, path: Path) -> tuple[str, str]:
        """(sha256, git blob sha1) of a file, computed once per size+mtime (streamed)."""
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self.lock:
            if key in self._hashes:
                return self._hashes[key]
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % st.st_size)
        with open(path, "rb") as f:
            while chunk := f.read(8 << 20):
                sha256.update(chunk)
                sha1.update(chunk)
        out = (sha256.hexdigest(), sha1.hexdigest())
        with self.lock:
            self._hashes[key] = out
        return out

    def entry(self, repo: Repo, rel: str) -> dict[str, Any]:
        """A file as the tree / paths-info endpoints describe it."""
        path = repo.dir / rel
        size = path.stat().st_size
        sha256, sha1 = self.hashes(path)
        e: dict[str, Any] = {"type": "file", "oid": sha1, "size": size, "path": rel}
        if repo.is_lfs(rel):
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()
            e["oid"] = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
            e["lfs"] = {"oid": sha256, "size": size, "pointerSize": len(pointer)}
        return e


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hubserver/1"
    state: HubState            # set on the subclass made per server
    is_cdn = False

    def log_message(self, fmt, *args):   # quiet
        pass

    # ------------------------------------------------------------------ plumbing
    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None,
              ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _json(self, data: Any, code: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(code, json.dumps(data).encode(), headers)

    def _error(self, code: int, error_code: str = "", message: str = "", headers: dict[str, str] | None = None):
        h = dict(headers or {})
        if error_code:
            h["X-Error-Code"] = error_code
        if message:
            h["X-Error-Message"] = message
        self._json({"error": message or error_code or f"HTTP {code}"}, code, h)

    def _log(self) -> None:
        with self.state.lock:
            self.state.requests.append({"method": self.command, "path": self.path, "cdn": self.is_cdn,
                                        "auth": "Authorization" in self.headers, "range": self.headers.get("Range")})

    def _dispatch(self) -> None:
        self._log()
        path = urlsplit(self.path).path
        if path.startswith("/_hubserver/"):
            return self._control(path)
        code = self.state.faults.status_for(unquote(path))
        if code:
            return self._error(code, "GatedRepo" if code == 403 else "", f"injected {code}")
        try:
            if self.is_cdn:
                return self._cdn(path)
            if path.startswith("/api/models/"):
                return self._api(path)
            return self._resolve(path)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_HEAD = do_POST = _dispatch

    def _control(self, path: str) -> None:
        if path == "/_hubserver/stats":
            with self.state.lock:
                return self._json({"sent": self.state.sent, "gets": self.state.gets})
        if path == "/_hubserver/faults" and self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            data = json.loads(self.rfile.read(n) or b"{}")
            if data.get("clear"):
                self.state.faults.clear()
            if data.get("reset_counts"):
                self.state.reset_counts()
            self.state.faults.update(data)
            return self._json({"ok": True})
        self._error(404)

    # ------------------------------------------------------------------ API
    def _split_repo(self, rest: str) -> tuple[str, str]:
        parts = rest.split("/", 2)
        return "/".join(parts[:2]), (parts[2] if len(parts) > 2 else "")

    def _revision_ok(self, repo: Repo, rev: str) -> bool:
        return unquote(rev) in ("main", repo.commit())

    def _api(self, path: str) -> None:
        repo_id, rest = self._split_repo(path[len("/api/models/"):])
        repo = self.state.repo(repo_id)
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        query = parse_qs(urlsplit(self.path).query)
        op, _, tail = rest.partition("/")
        rev, _, sub = tail.partition("/")
        if op in ("", "revision"):
            if op == "revision" and not self._revision_ok(repo, rev):
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
            blobs = query.get("blobs", ["false"])[0].lower() == "true"
            siblings = []
            for rel in repo.files():
                s: dict[str, Any] = {"rfilename": rel}
                if blobs:
                    e = self.state.entry(repo, rel)
                    s.update(size=e["size"], blobId=e["oid"])
                    if "lfs" in e:
                        s["lfs"] = {"sha256": e["lfs"]["oid"], "size": e["size"], "pointerSize": e["lfs"]["pointerSize"]}
                siblings.append(s)
            return self._json({"_id": repo.commit()[:24], "id": repo.id, "modelId": repo.id, "author": repo.id.split("/")[0],
                               "sha": repo.commit(), "private": False, "gated": False, "disabled": False,
                               "tags": [], "downloads": 0, "likes": 0, "siblings": siblings,
                               "lastModified": "2025-08-05T00:00:00.000Z", "createdAt": "2025-08-05T00:00:00.000Z"})
        if not self._revision_ok(repo, rev):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {unquote(rev)}")
        files = repo.files()
        dirs = sorted({"/".join(f.split("/")[:i]) for f in files for i in range(1, f.count("/") + 1)})

        def folder(d: str) -> dict[str, Any]:
            return {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}

        if op == "paths-info" and self.command == "POST":
            n = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(n).decode())
            out = []
            for p in form.get("paths", []):
                if p in files:
                    out.append(self.state.entry(repo, p))
                elif p in dirs:
                    out.append(folder(p))
            return self._json(out)
        if op == "tree":
            sub = unquote(sub).strip("/")
            recursive = query.get("recursive", ["false"])[0].lower() == "true"
            if sub and sub not in dirs:
                return self._error(404, "EntryNotFound", f"{sub} does not exist on {rev}")
            prefix = sub + "/" if sub else ""

            def wanted(p: str) -> bool:
                return p.startswith(prefix) and (recursive or "/" not in p[len(prefix):])

            out = [folder(d) for d in dirs if wanted(d)] + [self.state.entry(repo, f) for f in files if wanted(f)]
            return self._json(out)
        self._error(404)

    # ------------------------------------------------------------------ files
    def _resolve(self, path: str) -> None:
        parts = path.lstrip("/").split("/", 4)
        if len(parts) < 5 or parts[2] != "resolve":
            return self._error(404, "", "Not found")
        repo = self.state.repo(f"{parts[0]}/{parts[1]}")
        if repo is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        rev, rel = unquote(parts[3]), unquote(parts[4])
        if not self._revision_ok(repo, rev):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        commit = repo.commit()
        target = repo.dir / rel
        if ".." in rel.split("/") or not target.is_file():
            return self._error(404, "EntryNotFound", f"{rel} does not exist", {"X-Repo-Commit": commit})
        size = target.stat().st_size
        sha256, sha1 = self.state.hashes(target)
        if repo.is_lfs(rel):
            loc = f"{self.state.cdn_origin}/cdn/{sha256}/{quote(repo.id)}/{quote(rel)}"
            return self._send(302, b"", {"Location": loc, "X-Repo-Commit": commit, "ETag": f'"{sha256}"',
                                         "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(size),
                                         "Accept-Ranges": "bytes"}, ctype="text/plain")
        self._content(target, rel, {"X-Repo-Commit": commit, "ETag": f'"{sha1}"'})

    def _cdn(self, path: str) -> None:
        parts = path.lstrip("/").split("/", 4)
        if len(parts) < 5 or parts[0] != "cdn":
            return self._error(404)
        repo = self.state.repo(f"{unquote(parts[2])}/{unquote(parts[3])}")
        rel = unquote(parts[4])
        if repo is None or not (repo.dir / rel).is_file() or self.state.hashes(repo.dir / rel)[0] != parts[1]:
            return self._error(404, "", "NoSuchKey")   # content-addressed: a changed file is another URL
        self._content(repo.dir / rel, rel, {"ETag": f'"{parts[1]}"'})

    def _content(self, target: Path, rel: str, headers: dict[str, str]) -> None:
        size = target.stat().st_size
        start, end = 0, size - 1
        rng = self.headers.get("Range")
        code = 200
        if rng:
            try:
                unit, _, spec = rng.partition("=")
                a, _, b = spec.split(",")[0].strip().partition("-")
                if unit.strip() != "bytes" or not a:
                    raise ValueError
                start, end = int(a), min(int(b), size - 1) if b else size - 1
                if start >= size or end < start:
                    raise IndexError
                code = 206
            except IndexError:
                return self._send(416, b"", {"Content-Range": f"bytes */{size}"})
            except ValueError:
                start, end = 0, size - 1
        n = end - start + 1
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Last-Modified", formatdate(target.stat().st_mtime, usegmt=True))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        with self.state.lock:
            self.state.gets[rel] = self.state.gets.get(rel, 0) + 1
        faults = self.state.faults
        drop = faults.take_drop(rel)
        flip = faults.corrupt_at(rel)
        rate = faults.rate
        if drop is not None and not (start < drop <= end + 1):
            if drop <= start:               # already past it: drop right away (nothing useful sent)
                drop = start
            else:
                faults.update({"drop_after": {**faults.drop_after, rel: drop}})   # keep it for a later request
                drop = None
        pos = start
        sock = self.connection
        with open(target, "rb") as f:
            if drop is None and flip is None and not rate:
                while pos <= end:
                    done = os.sendfile(sock.fileno(), f.fileno(), pos, min(end + 1 - pos, 1 << 30))
                    if done == 0:
                        break
                    self.state.count(rel, done)
                    pos += done
                return
            piece = SLOW_PIECE if rate else PIECE
            while pos <= end:
                want = min(piece, end + 1 - pos)
                if drop is not None:
                    want = min(want, drop - pos)
                    if want <= 0:
                        self.close_connection = True
                        try:
                            sock.shutdown(socket.SHUT_RDWR)
                        except OSError:
                            pass
                        return
                f.seek(pos)
                data = bytearray(f.read(want))
                if flip is not None and pos <= flip < pos + len(data):
                    data[flip - pos] ^= 0xFF
                sock.sendall(data)
                self.state.count(rel, len(data))
                pos += len(data)
                if rate:
                    time.sleep(len(data) / rate)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def handle_error(self, request, client_address):
        import sys
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return                      # a client that went away (killed, dropped): not the server's error
        super().handle_error(request, client_address)


class HubServer:
    """Hub and CDN servers on two ports of `host`, in daemon threads. `endpoint` is what the client
    gets as HF_ENDPOINT / endpoint=."""

    def __init__(self, root: str | os.PathLike, host: str = "127.0.0.1", port: int = 0, cdn_port: int = 0,
                 public_host: str | None = None):
        self.state = HubState(Path(root))
        hub_cls = type("HubHandler", (Handler,), {"state": self.state, "is_cdn": False})
        cdn_cls = type("CdnHandler", (Handler,), {"state": self.state, "is_cdn": True})
        self.hub = _Server((host, port), hub_cls)
        self.cdn = _Server((host, cdn_port), cdn_cls)
        shown = public_host or ("127.0.0.1" if host in ("", "0.0.0.0") else host)
        self.endpoint = f"http://{shown}:{self.hub.server_address[1]}"
        self.state.cdn_origin = f"http://{shown}:{self.cdn.server_address[1]}"
        self._threads: list[threading.Thread] = []

    @property
    def faults(self) -> Faults:
        return self.state.faults

    @property
    def sent(self) -> dict[str, int]:
        return self.state.sent

    @property
    def gets(self) -> dict[str, int]:
        return self.state.gets

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self.state.requests

    def start(self) -> "HubServer":
        for srv in (self.hub, self.cdn):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        for srv in (self.hub, self.cdn):
            srv.shutdown()
            srv.server_close()

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", required=True, help="directory of repos: ROOT/<org>/<name>/<files>")
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--cdn-port", type=int, default=0, help="the CDN's port (default: any free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--public-host", default=None, help="host name clients use (default: --host)")
    ap.add_argument("--rate", type=float, default=0.0, help="throttle content to this many bytes/s")
    a = ap.parse_args(argv)
    server = HubServer(a.root, a.host, a.port, a.cdn_port, a.public_host)
    server.faults.rate = a.rate
    server.start()
    print(f"hubserver: endpoint {server.endpoint}, cdn {server.state.cdn_origin}, root {a.root}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
