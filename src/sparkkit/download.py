"""Put the model on disk (runbook 03): generate the embedded one, or download a GGUF, or generate
a full-scale stand-in (`source="generate"`: the catalogue model's exact shapes and tensor types,
scripted weights, so every endpoint answers valid harmony; for GPUs without the real weights).

Downloads. huggingface_hub does the listing, URLs, metadata and auth (`HfApi.model_info(files_metadata=True)`,
`get_hf_file_metadata` where a mirror lists no sizes, `hf_hub_url`, `build_hf_headers`, the
endpoint); the bytes are fetched here with httpx and HTTP Range, because huggingface_hub cannot
resume a file (since 1.18 every attempt writes a fresh uuid-suffixed `.incomplete`, opened "wb").
What lands where, under the download's folder `dest` (for 03: `<model_dir>/<model>/`):

- ``dest/<file>`` — a final file. Its name appears only by an atomic rename of a complete partial
  whose size and hash matched the Hub's own metadata (fsynced before the rename): LFS files against
  the sha256 the Hub publishes (paths-info / model_info `lfs.sha256`, `X-Linked-Etag`), small git
  files against their git blob sha1. The sha256 is computed while streaming.
- ``dest/.sparkkit-partial/<file>.part`` — the one partial of a file, under this stable name, so an
  interrupted download resumes where it stopped: after a dropped connection within the same run
  (bounded retries with backoff), after `kill -9` or a reboot on the next run (the existing prefix
  is re-hashed, then `Range: bytes=N-` fetches the rest). ``<file>.part.json`` beside it says which
  file (size and hash) the partial belongs to; a partial of another version is discarded.
  The folder is removed once empty.
- ``dest/.sparkkit-verified.json`` — the verification sidecar: for each final file its size,
  mtime_ns and hash as verified; a file whose size and mtime still match is not hashed again, so
  re-running 03 neither re-downloads nor re-reads 60 GB.
- ``dest/<file>.bad-<YYYYmmdd-HHMMSS>`` — a file whose size or hash did not match (downloaded now,
  or found in place): kept aside for inspection, never deleted; the next run fetches the file again.
- huggingface_hub's own leftovers from older sparkkit versions (``*.incomplete`` anywhere under
  ``dest``, including ``dest/.cache/huggingface/download/``) cannot be resumed safely and are
  deleted before the download starts (a line says how many and how large).

Before fetching, the download refuses when the disk cannot hold what is left to fetch (bytes already
in partials count as fetched), warns at 60 GB or more, and lists other copies of the same model
family it can see (model_dir's siblings, the Hugging Face cache, Ollama's store, llama.cpp's cache)
with their sizes and the command that removes each. Progress is printed as plain lines (flush=True,
every 10 s or 5 % of a file, and at each file's start and end), which papermill keeps in the executed
notebook. Tokens go into request headers only, never into output or results; the Authorization
header is dropped when a redirect leaves the Hub's origin (LFS CDN, Xet bridge).
"""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urljoin, urlsplit
import http.client
import queue
import urllib.request

from . import records
from .errors import ParameterError, SparkkitError
from .model import CATALOGUE, EMBEDDED, is_embedded

PARTIAL_DIR = ".sparkkit-partial"
SIDECAR = ".sparkkit-verified.json"
DEFAULT_EXCLUDE = ("original/*", "metal/*")   # the reference checkpoint and Apple-only weights in safetensors repos
RETRIES = 5                  # retries after a failed attempt (on one file: in a row, no byte gained)
BACKOFF_S = 1.0              # first wait between attempts; doubles up to BACKOFF_MAX_S
BACKOFF_MAX_S = 30.0
CHUNK = 1 << 20              # the most bytes read from the network at once
QUEUE = 6                    # chunks read but not yet written and hashed (the writer thread's queue)
IN_FLIGHT = CHUNK * (QUEUE + 2)   # the most a kill -9 can lose: fetched again on the next run
HASH_READ = 8 << 20
PROGRESS_EVERY_S = 10.0
PROGRESS_EVERY_FRACTION = 0.05
WARN_BYTES = 60e9            # warn before fetching this much
HEADROOM_BYTES = 1e9         # left free on the target disk after the download
GB = 1e9


# ----------------------------------------------------------------------------- results
@dataclass
class Placed:
    model: str
    path: str          # what the engine's -m gets (first shard)
    size_bytes: int
    source: str
    seconds: float
    repo: str = ""                 # downloads: the Hub repo, the commit fetched, and per file what happened
    revision: str = ""
    files: list[dict[str, Any]] = field(default_factory=list)
    fetched_bytes: int = 0         # bytes fetched over the network by this run
    resumed_bytes: int = 0         # bytes that were already in partials when this run started
    mb_per_s: float = 0.0
    verified: bool | None = None   # every file checked against the Hub's size and hash (None: generated)
    notes: list[str] = field(default_factory=list)
    other_copies: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def record(self) -> tuple[str, str, dict[str, Any]]:
        head = f"{self.model}: {self.size_bytes / 2**20:.2f} MiB at {self.path} ({self.source})"
        if self.verified:
            head += (f"; {len(self.files)} files verified by hash, {_human(self.fetched_bytes)} fetched this run"
                     + (f" ({_human(self.resumed_bytes)} resumed from partials)" if self.resumed_bytes else ""))
        if self.other_copies:
            total = sum(c["size_bytes"] for c in self.other_copies)
            head += f"; {len(self.other_copies)} other copies of this model family use {_human(total)} (see results)"
        return ("warn" if self.other_copies else "pass"), head, self.to_dict()

    def table(self):
        """One row per file: what the notebook displays after placing (cells whole: sha256s and paths)."""
        from .tables import WholeTable
        if self.files:
            return WholeTable(self.files)
        return WholeTable([{"name": Path(self.path).name, "size_bytes": self.size_bytes, "source": self.source,
                            "seconds": round(self.seconds, 2)}])

    def copies_table(self):
        """Other copies of this model family, and how to remove each (the commands whole)."""
        from .tables import WholeTable
        return WholeTable(self.other_copies)


@dataclass
class Fetched:
    """What `download_files` did: per file (name, size_bytes, sha256, fetched_bytes, resumed_bytes,
    seconds, mb_per_s, verified, status, path), totals, notes, other copies found."""
    repo: str
    revision: str
    dest: str
    files: list[dict[str, Any]]
    size_bytes: int
    fetched_bytes: int
    resumed_bytes: int
    seconds: float
    mb_per_s: float
    notes: list[str]
    other_copies: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RemoteFile:
    name: str
    size: int
    sha256: str | None     # LFS files: the Hub's sha256
    git_sha1: str | None   # small files: the git blob id

    @property
    def expected(self) -> str:
        return f"sha256 {self.sha256}" if self.sha256 else f"git blob sha1 {self.git_sha1}"


# ----------------------------------------------------------------------------- small helpers
def _human(n: float) -> str:
    n = float(n)
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB" if n >= 0.05 * GB else _human(n)


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def partial_path(dest: Path, name: str) -> Path:
    return Path(dest) / PARTIAL_DIR / (name + ".part")


def disk_free(path: Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding `path` (the seam tests shrink)."""
    p = Path(path)
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free


def _write(fd: int, data: bytes | memoryview) -> None:
    """Write all of `data` at fd's position (the seam tests make fail with ENOSPC)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_json(path: Path, data: Any) -> None:
    # records' atomic write: a temporary file of its own, never a shared fixed name two runs could share
    records.write_atomic(path, (json.dumps(data, indent=1, sort_keys=True) + "\n").encode("utf-8"))


def _hash_file(path: Path, size: int | None = None, out: Callable[..., None] | None = None,
               label: str = "") -> tuple[hashlib._Hash, hashlib._Hash, int]:
    """sha256 and git-blob sha1 (for a blob of `size` bytes) of the first `size` bytes of `path`."""
    n = path.stat().st_size if size is None else size
    sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % n)
    done, last = 0, time.monotonic()
    with open(path, "rb") as f:
        while done < n:
            b = f.read(min(HASH_READ, n - done))
            if not b:
                break
            sha256.update(b)
            sha1.update(b)
            done += len(b)
            if out and time.monotonic() - last >= PROGRESS_EVERY_S:
                out(f"  {label}: hashed {_human(done)} of {_human(n)}", flush=True)
                last = time.monotonic()
    return sha256, sha1, done


def _matches(rf: RemoteFile, sha256_hex: str, sha1_hex: str) -> bool:
    return sha256_hex == rf.sha256 if rf.sha256 else sha1_hex == rf.git_sha1


def _move_aside(path: Path, final: Path | None = None) -> Path:
    """Rename `path` (a final file, or a partial that should have become `final`) to `<final>.bad-<stamp>`."""
    final = final or path
    stamp = time.strftime("%Y%m%d-%H%M%S")
    bad, n = final.with_name(f"{final.name}.bad-{stamp}"), 1
    while bad.exists():
        bad, n = final.with_name(f"{final.name}.bad-{stamp}-{n}"), n + 1
    os.replace(path, bad)
    return bad


class _Sidecar:
    def __init__(self, dest: Path):
        self.path = Path(dest) / SIDECAR
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(self.data, dict):
                self.data = {}
        except (OSError, ValueError):
            self.data = {}

    def remembers(self, name: str, final: Path, rf: RemoteFile) -> dict[str, Any] | None:
        e = self.data.get(name)
        st = final.stat()
        if (isinstance(e, dict) and e.get("size") == st.st_size == rf.size and e.get("mtime_ns") == st.st_mtime_ns
                and (e.get("sha256") == rf.sha256 if rf.sha256 else e.get("git_sha1") == rf.git_sha1)):
            return e
        return None

    def remember(self, name: str, final: Path, sha256_hex: str, sha1_hex: str) -> None:
        st = final.stat()
        self.data[name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_hex,
                           "git_sha1": sha1_hex, "verified_at": records.now()}
        _write_json(self.path, self.data)

    def forget(self, name: str) -> None:
        if self.data.pop(name, None) is not None:
            _write_json(self.path, self.data)


# ----------------------------------------------------------------------------- errors
def _status_of(e: BaseException) -> int | None:
    resp = getattr(e, "response", None)
    return getattr(resp, "status_code", None)


def _transport_errors() -> tuple[type[BaseException], ...]:
    import httpx
    out: list[type[BaseException]] = [httpx.TransportError, ConnectionError, TimeoutError, http.client.HTTPException]
    try:
        import httpx2   # what huggingface_hub 2.x speaks
        out.append(httpx2.TransportError)
    except ImportError:
        pass
    return tuple(out)


def _auth_sentence(code: int, what: str, repo: str) -> str:
    return (f"the Hub refused {what} with HTTP {code} ({repo} is gated or private, or the token is missing or "
            f"wrong): accept the model's terms on its Hub page if it is gated, then run `hf auth login` or set "
            f"HF_TOKEN, and re-run 03")


def _api_error(e: BaseException, repo: str, revision: str, endpoint: str) -> SparkkitError:
    code = _status_of(e)
    name = type(e).__name__
    if code in (401, 403) or name == "GatedRepoError":
        return SparkkitError(_auth_sentence(code or 403, f"access to {repo}", repo))
    if name == "RevisionNotFoundError":
        return SparkkitError(f"revision {revision!r} of {repo} was not found on {endpoint} (HTTP 404): pass an "
                             f"existing branch, tag or commit (`-p revision main`) and re-run 03")
    if code == 404 or name == "RepositoryNotFoundError":
        return SparkkitError(f"repository {repo} was not found on {endpoint} (HTTP 404): check the repo name, "
                             f"or `-p hf_endpoint` if it lives on a mirror, and re-run 03")
    if code:
        return SparkkitError(f"the Hub at {endpoint} failed to list {repo} (HTTP {code}) after {RETRIES + 1} tries: "
                             f"nothing was fetched; re-run 03 later")
    return SparkkitError(f"could not reach {endpoint} to list {repo} ({name}: {e}) after {RETRIES + 1} tries: "
                         f"check the network (or `-p hf_endpoint`) and re-run 03")


def _retrying(fn: Callable[[], Any], retryable: Callable[[BaseException], bool], out: Callable[..., None],
              what: str) -> Any:
    delay = BACKOFF_S
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as e:   # noqa: BLE001 - sorted by `retryable`
            if attempt > RETRIES or not retryable(e):
                raise
            out(f"  {what}: {type(e).__name__} (HTTP {_status_of(e)}); retry {attempt} of {RETRIES} "
                f"in {delay:.1f} s", flush=True)
            time.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_S)


def _is_retryable(e: BaseException) -> bool:
    code = _status_of(e)
    return (code is not None and (code == 429 or code >= 500)) or (code is None and isinstance(e, _transport_errors()))


# ----------------------------------------------------------------------------- listing
def list_remote(repo: str, revision: str = "main", endpoint: str | None = None, token: str | None = None,
                out: Callable[..., None] = print) -> tuple[str, dict[str, RemoteFile]]:
    """(commit, {path: RemoteFile}) for `repo` at `revision`, from the Hub's own metadata."""
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    endpoint = _endpoint(endpoint)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        info = _retrying(lambda: api.model_info(repo, revision=revision, files_metadata=True), _is_retryable, out,
                         f"listing {repo}")
    except SparkkitError:
        raise
    except Exception as e:   # noqa: BLE001
        raise _api_error(e, repo, revision, endpoint) from e
    commit = info.sha or revision
    files: dict[str, RemoteFile] = {}
    for s in info.siblings or []:
        sha256 = s.lfs.sha256 if s.lfs else None
        size = s.size if s.size is not None else (s.lfs.size if s.lfs else None)
        if size is None:   # a mirror that lists no sizes: ask for the file's metadata (HEAD)
            url = hf_hub_url(repo, s.rfilename, revision=commit, endpoint=endpoint)
            try:
                meta = _retrying(lambda u=url: get_hf_file_metadata(u, token=token, endpoint=endpoint), _is_retryable,
                                 out, f"metadata of {s.rfilename}")
            except Exception as e:   # noqa: BLE001
                raise _file_error(e, repo, s.rfilename, endpoint) from e
            size, etag = meta.size, (meta.etag or "")
            if re.fullmatch(r"[0-9a-f]{64}", etag):
                sha256 = etag
            files[s.rfilename] = RemoteFile(s.rfilename, int(size or 0), sha256, None if sha256 else etag)
            continue
        files[s.rfilename] = RemoteFile(s.rfilename, int(size), sha256, None if sha256 else s.blob_id)
    return commit, files


def _file_error(e: BaseException, repo: str, name: str, endpoint: str) -> SparkkitError:
    code = _status_of(e)
    if code in (401, 403):
        return SparkkitError(_auth_sentence(code, name, repo))
    if code == 404:
        return SparkkitError(f"{name} was not found in {repo} on {endpoint} (HTTP 404): check the file and repo "
                             f"names (sparkkit.model.CATALOGUE) and re-run 03")
    return SparkkitError(f"the Hub failed to describe {name} of {repo} ({type(e).__name__}, HTTP {code}): "
                         f"re-run 03 later")


def _endpoint(endpoint: str | None) -> str:
    from huggingface_hub import constants
    return (endpoint or constants.ENDPOINT).rstrip("/")


def select_files(listing: dict[str, RemoteFile], files_or_patterns: list[str] | tuple[str, ...] | None,
                 exclude: tuple[str, ...] | list[str] = DEFAULT_EXCLUDE, repo: str = "",
                 endpoint: str = "") -> list[RemoteFile]:
    """Exact names are taken as given (missing: an error naming them); glob patterns (`*`, `?`, `[`) match
    the listing minus `exclude`; None: every file minus `exclude`."""
    def excluded(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in exclude)

    chosen: dict[str, RemoteFile] = {}
    for item in (files_or_patterns if files_or_patterns is not None else ["*"]):
        if any(c in item for c in "*?["):
            for name in sorted(listing):
                if fnmatch.fnmatchcase(name, item) and not excluded(name):
                    chosen.setdefault(name, listing[name])
        elif item in listing:
            chosen.setdefault(item, listing[item])
        else:
            raise SparkkitError(f"{item} was not found in {repo} on {endpoint} (it is not in the repo's file list): "
                                f"check the file name and re-run 03")
    return list(chosen.values())


# ----------------------------------------------------------------------------- other copies
def _family(model: str) -> str:
    """'gpt-oss-120b' -> 'gptoss'; 'qwen3-coder-30b-a3b' -> 'qwen3coder' (names compared without separators)."""
    base = re.split(r"[-_.]\d+(\.\d+)?b(\b|[-_.])", model.lower())[0]
    return re.sub(r"[^a-z0-9]", "", base)


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def _du(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size if not path.is_symlink() else 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(root, f))
            except OSError:
                continue
            if not os.path.islink(os.path.join(root, f)):
                total += st.st_size
    return total


def _hf_cache_root() -> Path:
    env = os.environ.get("HF_HUB_CACHE")
    if env:
        return Path(env).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def _ollama_roots() -> list[Path]:
    roots = [os.environ.get("OLLAMA_MODELS"), str(Path.home() / ".ollama" / "models"),
             "/usr/share/ollama/.ollama/models"]
    return [Path(r).expanduser() for r in dict.fromkeys(r for r in roots if r)]


def find_copies(model: str, model_dir: Path, *, skip: tuple[Path, ...] = (), hf_cache: Path | None = None,
                ollama_roots: list[Path] | None = None, llama_cache: Path | None = None) -> list[dict[str, Any]]:
    """Other copies of `model`'s family this host holds ("one engine, one quant"): entries of `model_dir`
    (but `skip`), Hugging Face cache repos, Ollama manifests, llama.cpp cache files; each with its size
    and the exact command that removes it. The roots default to where those tools keep models."""
    fam = _family(model)
    skip_r = {p.resolve() for p in skip}
    found: list[dict[str, Any]] = []

    def add(where: str, what: str, path: Path, size: int, remove: str) -> None:
        found.append({"where": where, "what": what, "path": str(path), "size_bytes": int(size), "size": _gb(size),
                      "remove": remove})

    model_dir = Path(model_dir)
    if model_dir.is_dir():
        for p in sorted(model_dir.iterdir()):
            if (p.name.startswith(".") or p.resolve() in skip_r or fam not in _norm(p.name)
                    or p.name.startswith(tuple(EMBEDDED_FILES.values()))):     # the embedded test model is no copy of anything
                continue
            if p.is_dir() or p.suffix in (".gguf", ".safetensors", ".bin") or ".gguf" in p.name:
                rm = "rm -rf --" if p.is_dir() and not p.is_symlink() else "rm -f --"
                add("model_dir", p.name, p, _du(p), f"{rm} {shlex.quote(str(p))}")
    hub = Path(hf_cache) if hf_cache is not None else _hf_cache_root()
    if hub.is_dir():
        for p in sorted(hub.glob("models--*")):
            repo = p.name[len("models--"):].replace("--", "/", 1)
            if fam in _norm(repo) and p.resolve() not in skip_r:
                add("huggingface cache", repo, p, _du(p),
                    f"hf cache rm model/{repo} --cache-dir {shlex.quote(str(hub))} -y")
    for root in (ollama_roots if ollama_roots is not None else _ollama_roots()):
        manifests = Path(root) / "manifests"
        if not manifests.is_dir():
            continue
        for m in sorted(x for x in manifests.rglob("*") if x.is_file()):
            parts = m.relative_to(manifests).parts       # host / namespace / model / tag
            if len(parts) < 4 or fam not in _norm(parts[-2]):
                continue
            try:
                data = json.loads(m.read_text(encoding="utf-8"))
                size = sum(int(x.get("size", 0)) for x in [data.get("config") or {}, *(data.get("layers") or [])])
            except (OSError, ValueError, TypeError, AttributeError):
                size = 0
            name = (f"{parts[-2]}:{parts[-1]}" if parts[0] == "registry.ollama.ai" and parts[1] == "library"
                    else f"{'/'.join(parts[:-1])}:{parts[-1]}")
            add("ollama", name, m, size, f"ollama rm {name}")
    lc = Path(llama_cache) if llama_cache is not None else Path(
        os.environ.get("LLAMA_CACHE") or Path.home() / ".cache" / "llama.cpp").expanduser()
    if lc.is_dir():
        for p in sorted(lc.glob("*.gguf")):
            if fam in _norm(p.name) and p.resolve() not in skip_r:
                add("llama.cpp cache", p.name, p, _du(p), f"rm -f -- {shlex.quote(str(p))}")
    return found


# ----------------------------------------------------------------------------- fetching
class _Progress:
    def __init__(self, out: Callable[..., None], name: str, size: int, start: int):
        self.out, self.name, self.size, self.start = out, name, size, start
        self.t0 = self.t_last = time.monotonic()
        self.f_last = start / size if size else 1.0

    def update(self, have: int) -> None:
        now = time.monotonic()
        frac = have / self.size if self.size else 1.0
        if now - self.t_last < PROGRESS_EVERY_S and frac - self.f_last < PROGRESS_EVERY_FRACTION:
            return
        self.t_last, self.f_last = now, frac
        rate = (have - self.start) / max(now - self.t0, 1e-6)
        eta = _duration((self.size - have) / rate) if rate > 0 else "?"
        self.out(f"  {self.name}: {_human(have)} of {_human(self.size)} ({100 * frac:.0f}%), "
                 f"{rate / 1e6:.1f} MB/s, ETA {eta}", flush=True)


class _Retry(Exception):
    """An attempt failed in a way the next attempt may fix (dropped connection, 429/5xx)."""


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urlsplit(url)
    return u.scheme, (u.hostname or "").lower(), u.port or {"http": 80, "https": 443}.get(u.scheme)


class _Direct:
    """A GET over http.client, whose body is read straight off the socket in CHUNK pieces: the bytes of a
    60 GB download, where httpx's pure-Python HTTP parsing capped one stream near 0.3–0.65 GB/s here
    (tools/fullscale, records/fullscale/NOTES.md). Redirects, status and headers are handled as with httpx."""

    def __init__(self, url: str, headers: dict[str, str], timeout: float):
        u = urlsplit(url)
        cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
        self.conn = cls(u.hostname, u.port, timeout=timeout)
        try:
            self.conn.request("GET", (u.path or "/") + (f"?{u.query}" if u.query else ""), headers=headers)
            self.resp = self.conn.getresponse()
        except BaseException:
            self.conn.close()
            raise
        self.url, self.status_code = url, self.resp.status
        self.headers = {k.lower(): v for k, v in self.resp.getheaders()}
        self.is_redirect = self.status_code in (301, 302, 303, 307, 308)

    def iter_raw(self):
        while True:
            data = self.resp.read1(CHUNK)
            if not data:
                return
            yield data

    def close(self) -> None:
        self.conn.close()


def _direct_ok(url: str) -> bool:
    """http.client knows no proxies: where one is set for this URL, httpx (which honours them) fetches."""
    proxies = urllib.request.getproxies()
    scheme, host = urlsplit(url).scheme, urlsplit(url).hostname or ""
    return scheme not in proxies or bool(urllib.request.proxy_bypass(host))


def _open(client, url: str, headers: dict[str, str], start: int):
    """GET `url` from byte `start`, following redirects by hand: Authorization goes to the Hub's own
    origin only (a signed CDN or Xet-bridge URL must not get the token)."""
    hub = _origin(url)
    for _ in range(10):
        h = {k: v for k, v in headers.items() if _origin(url) == hub or k.lower() != "authorization"}
        if start:
            h["Range"] = f"bytes={start}-"
        if _direct_ok(url):
            timeout = client.timeout.read if client.timeout.read is not None else 60.0
            resp = _Direct(url, h, timeout)
        else:
            resp = client.send(client.build_request("GET", url, headers=h), stream=True, follow_redirects=False)
        if resp.is_redirect and "location" in resp.headers:
            url = urljoin(str(url), resp.headers["location"])
            resp.close()
            continue
        return resp
    raise _Retry("too many redirects")


class _WriteFailed(Exception):
    """The writer thread's error (args[0]), raised in the reading thread: not a network fault."""


class _Lane:
    """One worker thread applying `fn` to each chunk in order (hashlib and os.write release the GIL)."""

    def __init__(self, fn: Callable[[bytes], Any]):
        self.fn, self.done, self.error = fn, 0, None
        self.q: queue.Queue = queue.Queue(maxsize=QUEUE)
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            data = self.q.get()
            if data is None:
                return
            if self.error is None:
                try:
                    self.fn(data)
                    self.done += len(data)
                except BaseException as e:   # noqa: BLE001 - handed to the reading thread
                    self.error = e
            self.q.task_done()


class _Writer:
    """Writes the fetched chunks on one thread and hashes them on another, while the caller reads the
    socket: a download runs at the slowest of the three (disk, sha256, network), not at their sum. `done`
    counts the bytes both written and hashed; the writer's error (ENOSPC) is raised by `put`/`drain` in
    the reading thread as _WriteFailed."""

    def __init__(self, fd: int, hashes: list):
        def hash_all(data: bytes) -> None:
            for h in hashes:
                h.update(data)
        self.lanes = [_Lane(lambda data: _write(fd, data)), _Lane(hash_all)]

    @property
    def done(self) -> int:
        return min(lane.done for lane in self.lanes)

    def _check(self) -> None:
        for lane in self.lanes:
            if lane.error is not None:
                raise _WriteFailed(lane.error)

    def put(self, data: bytes) -> None:
        self._check()
        for lane in self.lanes:
            lane.q.put(data)

    def drain(self) -> None:
        for lane in self.lanes:
            lane.q.join()
        self._check()

    def close(self) -> None:
        for lane in self.lanes:
            lane.q.put(None)
        for lane in self.lanes:
            lane.t.join()


def _partial_meta(rf: RemoteFile, repo: str) -> dict[str, Any]:
    return {"repo": repo, "file": rf.name, "size": rf.size, "sha256": rf.sha256, "git_sha1": rf.git_sha1}


def _usable_partial(dest: Path, rf: RemoteFile, repo: str) -> int:
    """Bytes in `rf`'s partial that a resume keeps: 0 unless its .part.json says it is this very file."""
    part = partial_path(dest, rf.name)
    try:
        have = part.stat().st_size
        old = json.loads(part.with_name(part.name + ".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    want = _partial_meta(rf, repo)
    if not isinstance(old, dict) or {k: old.get(k) for k in want} != want or have > rf.size:
        return 0
    return have


def _fetch_one(client, url: str, headers: dict[str, str], rf: RemoteFile, dest: Path, repo: str, commit: str,
               sidecar: _Sidecar, out: Callable[..., None], left_after: int) -> dict[str, Any]:
    """Fetch `rf` into its partial (resuming), verify it, rename it into place. Returns the file's
    result row; a hash mismatch returns a row with `error` (the partial moved aside)."""
    final = dest / rf.name
    part = partial_path(dest, rf.name)
    meta_path = part.with_name(part.name + ".json")
    part.parent.mkdir(parents=True, exist_ok=True)
    want = _partial_meta(rf, repo)
    have = _usable_partial(dest, rf, repo)
    if not have and part.exists() and part.stat().st_size:
        out(f"  {rf.name}: discarding a partial of another version ({_human(part.stat().st_size)})", flush=True)
    if not have:
        part.unlink(missing_ok=True)
    _write_json(meta_path, {**want, "commit": commit})
    if have:
        sha256, sha1, have = _hash_file(part, have, out, f"{rf.name} (re-hashing the partial)")
    else:
        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % rf.size)
    resumed, fetched = have, 0
    out(f"fetching {rf.name}: {_human(rf.size)}" + (f", resuming at {_human(have)} ({100 * have / rf.size:.0f}%)"
                                                     if have else ""), flush=True)
    t0 = time.monotonic()
    progress = _Progress(out, rf.name, rf.size, have)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, have)
        os.lseek(fd, have, os.SEEK_SET)
        failures, delay, last_error = 0, BACKOFF_S, ""
        while have < rf.size:
            before = have
            try:
                resp = _open(client, url, headers, have)
                try:
                    code = resp.status_code
                    if code in (401, 403):
                        raise SparkkitError(_auth_sentence(code, rf.name, repo))
                    if code == 404:
                        raise SparkkitError(f"{rf.name} was not found in {repo} at {commit[:12]} (HTTP 404 from "
                                            f"{urlsplit(str(resp.url)).netloc}): check the file and repo names and "
                                            f"re-run 03")
                    if code == 429 or code >= 500:
                        raise _Retry(f"HTTP {code}")
                    restart = (code == 200 and have > 0) or code == 416
                    if code == 206:
                        m = re.match(r"bytes (\d+)-", resp.headers.get("content-range", ""))
                        restart = not m or int(m.group(1)) != have
                    elif code != 200 and not restart:
                        raise _Retry(f"HTTP {code}")
                    if restart:
                        out(f"  {rf.name}: the server did not resume at byte {have} (HTTP {code}); starting the "
                            f"file over", flush=True)
                        have, resumed = 0, 0
                        os.ftruncate(fd, 0)
                        os.lseek(fd, 0, os.SEEK_SET)
                        sha256, sha1 = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % rf.size)
                        if code == 416:
                            raise _Retry("HTTP 416")
                    writer = _Writer(fd, [sha256, sha1] if not rf.sha256 else [sha256])
                    read = have
                    try:
                        for data in resp.iter_raw():
                            if read + len(data) > rf.size:
                                data = data[:rf.size - read]
                            writer.put(data)
                            read += len(data)
                            progress.update(have + writer.done)
                            if read >= rf.size:
                                break
                        writer.drain()
                    except _WriteFailed as w:
                        e = w.args[0]
                        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
                            kept = os.fstat(fd).st_size
                            raise SparkkitError(
                                f"the disk filled up while writing {rf.name} (no space left on the filesystem "
                                f"of {dest}): the {_gb(kept)} fetched so far are kept in {part}; free at least "
                                f"{_gb(rf.size - kept + left_after + HEADROOM_BYTES)} there (or re-run with "
                                f"`-p model_dir <a bigger disk>`) and re-run 03 to resume") from e
                        raise e from None
                    finally:
                        writer.close()          # what was read is written before anything else happens
                        have += writer.done
                        fetched += writer.done
                        progress.update(have)
                finally:
                    resp.close()
                if have < rf.size:
                    raise _Retry(f"the connection closed at byte {have} of {rf.size}")
            except (_Retry, *_transport_errors()) as e:
                last_error = f"{type(e).__name__}: {e}" if not isinstance(e, _Retry) else str(e)
                if have > before:
                    failures, delay = 0, BACKOFF_S     # progress was made: the count starts again
                failures += 1
                if failures > RETRIES:
                    kept = f"the {_gb(have)} fetched so far are kept in {part}; " if have else ""
                    why = (f"the Hub failed to send {rf.name} of {repo} ({last_error}, {failures} attempts)"
                           if last_error.startswith("HTTP") else
                           f"the connection kept failing while fetching {rf.name} of {repo} ({last_error}; "
                           f"{failures} attempts)")
                    raise SparkkitError(f"{why}: {kept}check the network or the Hub's status and re-run 03 "
                                        f"to resume") from e
                out(f"  {rf.name}: {last_error}; resuming at byte {have} in {delay:.1f} s "
                    f"(retry {failures} of {RETRIES})", flush=True)
                time.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX_S)
        os.fsync(fd)
    finally:
        os.close(fd)
    seconds = time.monotonic() - t0
    sha256_hex, sha1_hex = sha256.hexdigest(), sha1.hexdigest()
    row = {"name": rf.name, "size_bytes": rf.size, "sha256": sha256_hex, "fetched_bytes": fetched,
           "resumed_bytes": resumed, "seconds": round(seconds, 3),
           "mb_per_s": round(fetched / seconds / 1e6, 2) if seconds > 0 else 0.0}
    if not _matches(rf, sha256_hex, sha1_hex):
        final.parent.mkdir(parents=True, exist_ok=True)
        bad = _move_aside(part, final)
        meta_path.unlink(missing_ok=True)
        got = f"sha256 {sha256_hex}" if rf.sha256 else f"git blob sha1 {sha1_hex}"
        out(f"  {rf.name}: HASH MISMATCH: got {got}, the Hub says {rf.expected}; kept aside as {bad}", flush=True)
        return {**row, "verified": False, "status": "hash mismatch", "path": str(bad),
                "error": f"{rf.name} failed verification (hash mismatch: got {got[:19]}…, the Hub publishes "
                         f"{rf.expected[:19]}…); the bad copy is kept at {bad}; re-run 03 to fetch it again"}
    if final.exists():
        _move_aside(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, final)
    _fsync_dir(final.parent)
    meta_path.unlink(missing_ok=True)
    sidecar.remember(rf.name, final, sha256_hex, sha1_hex)
    out(f"  {rf.name}: done, {_human(fetched)} fetched in {_duration(seconds)} ({row['mb_per_s']} MB/s), "
        f"{rf.expected[:14]}… verified", flush=True)
    return {**row, "verified": True, "status": "downloaded", "path": str(final)}


def _check_present(rf: RemoteFile, dest: Path, sidecar: _Sidecar, out: Callable[..., None]) -> dict[str, Any] | None:
    """A final file already in place: its result row if it is verified (remembered, or hashed now);
    None if it is missing or was wrong (then moved aside, with a line saying so)."""
    final = dest / rf.name
    if not final.is_file():
        return None
    row = {"name": rf.name, "size_bytes": rf.size, "fetched_bytes": 0, "resumed_bytes": 0, "seconds": 0.0,
           "mb_per_s": 0.0, "path": str(final)}
    size = final.stat().st_size
    if size != rf.size:
        bad = _move_aside(final)
        sidecar.forget(rf.name)
        out(f"  {rf.name}: present but {size} bytes, the Hub says {rf.size}: moved aside to {bad.name}; "
            f"fetching it again", flush=True)
        return None
    e = sidecar.remembers(rf.name, final, rf)
    if e:
        return {**row, "sha256": e["sha256"], "verified": True, "status": "verified earlier (sidecar)"}
    out(f"verifying {rf.name} already in place ({_human(size)})", flush=True)
    t0 = time.monotonic()
    sha256, sha1, _n = _hash_file(final, None, out, rf.name)
    if _matches(rf, sha256.hexdigest(), sha1.hexdigest()):
        sidecar.remember(rf.name, final, sha256.hexdigest(), sha1.hexdigest())
        return {**row, "sha256": sha256.hexdigest(), "verified": True, "status": "verified in place",
                "seconds": round(time.monotonic() - t0, 3)}
    bad = _move_aside(final)
    sidecar.forget(rf.name)
    out(f"  {rf.name}: present with the right size but the wrong hash ({rf.expected[:14]}… expected): moved aside "
        f"to {bad.name}; fetching it again", flush=True)
    return None


def _clean_hf_incompletes(dest: Path, out: Callable[..., None]) -> list[str]:
    stale = [p for p in dest.rglob("*.incomplete") if p.is_file() and PARTIAL_DIR not in p.parts]
    if not stale:
        return []
    size = sum(p.stat().st_size for p in stale)
    for p in stale:
        p.unlink()
    note = (f"deleted {len(stale)} huggingface_hub *.incomplete file(s) ({_human(size)}) left in {dest} by an older "
            f"sparkkit (they cannot be resumed)")
    out(note, flush=True)
    return [note]


def _remove_empty_partial_dir(dest: Path) -> None:
    root = dest / PARTIAL_DIR
    if not root.is_dir():
        return
    for d in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            d.rmdir()
        except OSError:
            pass
    try:
        root.rmdir()
    except OSError:
        pass


def download_files(repo: str, files_or_patterns: list[str] | tuple[str, ...] | None, dest: str | os.PathLike, *,
                   endpoint: str | None = None, token: str | None = None, revision: str = "main",
                   exclude: tuple[str, ...] | list[str] = DEFAULT_EXCLUDE, family: str | None = None,
                   copies_in: Path | None = None, scan_roots: dict[str, Any] | None = None,
                   out: Callable[..., None] = print) -> Fetched:
    """Fetch files of Hub repo `repo` into `dest`, resumable and verified (see the module docstring).

    `files_or_patterns`: exact paths (each must exist) and/or glob patterns (`*.safetensors`); None: the
    whole repo. `exclude` applies to pattern matches (default: `original/*` and `metal/*`). `family`
    (a model name such as 'gpt-oss-120b'): list other copies of that family found in `copies_in`'s
    entries (not `dest`), the HF cache, Ollama and llama.cpp; `scan_roots` overrides find_copies'
    roots (hf_cache, ollama_roots, llama_cache). Raises SparkkitError with one sentence on failure."""
    import httpx
    from huggingface_hub.utils import build_hf_headers

    t0 = time.monotonic()
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    endpoint = _endpoint(endpoint)
    commit, listing = list_remote(repo, revision, endpoint, token, out)
    chosen = select_files(listing, files_or_patterns, exclude, repo, endpoint)
    notes = _clean_hf_incompletes(dest, out)
    sidecar = _Sidecar(dest)
    rows: dict[str, dict[str, Any]] = {}
    todo: list[RemoteFile] = []
    for rf in chosen:
        row = _check_present(rf, dest, sidecar, out)
        if row:
            rows[rf.name] = row
        else:
            todo.append(rf)
    in_partials = sum(_usable_partial(dest, rf, repo) for rf in todo)
    need = sum(rf.size for rf in todo) - in_partials
    copies: list[dict[str, Any]] = []
    if family:
        copies = find_copies(family, copies_in or dest.parent, skip=(dest,), **(scan_roots or {}))
        if copies:
            total = _human(sum(c["size_bytes"] for c in copies))
            out(f"other copies of {_family(family)} models on this host ({total}; "
                "one engine, one quant: remove what you no longer serve):", flush=True)
            for c in copies:
                out(f"  {c['where']}: {c['what']} — {c['size']} — remove with: {c['remove']}", flush=True)
    if need > 0:
        free = disk_free(dest)
        if need + HEADROOM_BYTES > free:
            also = (f"; other copies of this model family listed above use "
                    f"{_gb(sum(c['size_bytes'] for c in copies))}" if copies else "")
            raise SparkkitError(
                f"not enough disk for {repo} in {dest}: {_gb(need)} still to fetch (+{_gb(HEADROOM_BYTES)} headroom) "
                f"but {_gb(free)} free{also}: free space there, or re-run with `-p model_dir <a bigger disk>`")
        if need >= WARN_BYTES:
            note = (f"about to fetch {_gb(need)} from {endpoint} into {dest} ({_gb(free)} free): this takes a while; "
                    f"interrupting is safe, re-running resumes")
            out("WARNING: " + note, flush=True)
            notes.append(note)
    out(f"{repo} @ {commit[:12]}: {len(chosen)} files, {_human(sum(rf.size for rf in chosen))}; "
        f"{len(rows)} already verified, {_human(need)} to fetch" + (f", {_human(in_partials)} in partials"
                                                                    if in_partials else ""), flush=True)
    from huggingface_hub import hf_hub_url
    headers = build_hf_headers(token=token, library_name="sparkkit")
    headers["Accept-Encoding"] = "identity"
    failed: list[str] = []
    left = need
    if todo:
        timeout = httpx.Timeout(60.0, connect=20.0)
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            for rf in todo:
                left -= rf.size - _usable_partial(dest, rf, repo)
                url = hf_hub_url(repo, rf.name, revision=commit, endpoint=endpoint)
                row = _fetch_one(client, url, headers, rf, dest, repo, commit, sidecar, out, max(left, 0))
                rows[rf.name] = row
                if "error" in row:
                    failed.append(row.pop("error"))
    if not failed:   # every file is in place: what is left in the partial folder belongs to nothing
        stale = [p for p in (dest / PARTIAL_DIR).rglob("*") if p.is_file()] if (dest / PARTIAL_DIR).is_dir() else []
        if stale:
            for p in stale:
                p.unlink()
            notes.append(f"deleted {len(stale)} stale file(s) from {dest / PARTIAL_DIR} (partials of files not "
                         f"in this download)")
            out(notes[-1], flush=True)
    _remove_empty_partial_dir(dest)
    if failed:
        raise SparkkitError(failed[0] if len(failed) == 1 else
                            f"{len(failed)} files failed verification: " + " / ".join(failed))
    bad = sorted(p for p in dest.rglob("*.bad-*") if p.is_file())
    if bad:
        notes.append(f"{len(bad)} file(s) that failed verification are kept aside in {dest} "
                     f"({_human(sum(p.stat().st_size for p in bad))}); delete them when done: "
                     + " ".join(f"rm -f -- {shlex.quote(str(p))}" for p in bad[:3]) + (" …" if len(bad) > 3 else ""))
    ordered = [rows[rf.name] for rf in chosen]
    fetched = sum(r["fetched_bytes"] for r in ordered)
    seconds = time.monotonic() - t0
    return Fetched(repo, commit, str(dest), ordered, sum(r["size_bytes"] for r in ordered), fetched,
                   sum(r["resumed_bytes"] for r in ordered), seconds,
                   round(fetched / seconds / 1e6, 2) if seconds > 0 else 0.0, notes, copies)


# ----------------------------------------------------------------------------- placing
def embedded_spec():
    """The embedded model: scripted to call `Read` on the probe file when tools are offered, and the Agent
    tool where the prompt holds the agent-loop session's markers (agentloop.tool_rules); the guide's smoke-test
    prompt gets a code answer (tinymodel.CODE_ANSWER)."""
    from .agentloop import tool_rules
    from .tinymodel import CODE_ANSWER, CODE_MARKER, TinySpec, common_words
    probe = records.probe_file()
    return TinySpec(tool_name="Read", tool_args=json.dumps({"file_path": str(probe)}),
                    tool_rules=tool_rules(probe), answer_rules=((CODE_MARKER, CODE_ANSWER),),
                    vocab_words=common_words())


EMBEDDED_FILES = {"embedded": "tiny-gpt-oss", "embedded-qwen3-coder": "tiny-qwen3-coder"}   # file stem = alias


def place_embedded(model_dir: Path, model: str = "embedded") -> Placed:
    """Generate the embedded tiny model `model` (model.EMBEDDED) in `model_dir`."""
    t0 = time.monotonic()
    stem = EMBEDDED_FILES[model]
    if model == "embedded-qwen3-coder":
        from .tinyqwen import embedded_spec as qwen_spec, generate as generate_qwen
        g = generate_qwen(Path(model_dir) / f"{stem}.gguf", qwen_spec(records.probe_file()))
    else:
        from .tinymodel import generate
        g = generate(Path(model_dir) / f"{stem}.gguf", embedded_spec())
    print(f"generated {g.path.name}: {g.size_bytes / 2**20:.2f} MiB in {time.monotonic() - t0:.2f} s", flush=True)
    return Placed(model, str(g.path), g.size_bytes, f"generated (scripted {stem})", time.monotonic() - t0)


SOURCES = ("auto", "hub", "generate")


def place_generated(model: str, model_dir: Path, chat_template: str = "") -> Placed:
    """`model`'s real shapes and tensor types with scripted weights (tinymodel.gpt_oss_spec), streamed
    to `model_dir`; scripted to call `Read` on the probe file when tools are offered, like the
    embedded model."""
    from .tinymodel import CODE_ANSWER, CODE_MARKER, GPT_OSS_SHAPES, common_words, generate, gpt_oss_spec
    args = json.dumps({"file_path": str(records.probe_file())})
    if model == "qwen3-coder-30b-a3b":            # its own generator: qwen3moe, its template and XML tool calls
        from .tinyqwen import generate as generate_qwen, qwen3_coder_spec
        if chat_template:
            raise ParameterError("chat_template", chat_template, f"empty for {model} (the generator embeds its "
                                 "Qwen3-Coder template)")
        t0 = time.monotonic()
        g = generate_qwen(Path(model_dir) / f"{model}-scripted.gguf",
                          qwen3_coder_spec(tool_name="Read", tool_args=args, vocab_words=common_words()),
                          progress=lambda line: print(line, flush=True))
        return Placed(model, str(g.path), g.size_bytes, f"generated: {model} shapes (Q8_0), scripted weights, "
                      f"{g.size_bytes / (time.monotonic() - t0) / 1e9:.2f} GB/s", time.monotonic() - t0)
    if model not in GPT_OSS_SHAPES:
        raise ParameterError("source", "generate", f"'hub' for {model} (generate knows "
                             f"{', '.join([*GPT_OSS_SHAPES, 'qwen3-coder-30b-a3b'])})")
    template = None
    if chat_template:
        p = Path(chat_template).expanduser()
        if not p.is_file():
            raise ParameterError("chat_template", chat_template, "the path of a Jinja file, or empty")
        template = p.read_text(encoding="utf-8")
    spec = gpt_oss_spec(model, tool_name="Read", tool_args=args,
                        answer_rules=((CODE_MARKER, CODE_ANSWER),), vocab_words=common_words(), chat_template=template)
    t0 = time.monotonic()
    g = generate(Path(model_dir) / f"{model}-scripted.gguf", spec, progress=lambda line: print(line, flush=True))
    how = f"generated: {model} shapes, scripted weights, {g.size_bytes / (time.monotonic() - t0) / 1e9:.2f} GB/s"
    return Placed(model, str(g.path), g.size_bytes, how + (f", template {Path(chat_template).name}" if template else ""),
                  time.monotonic() - t0)


def place_download(model: str, model_dir: Path, endpoint: str | None = None, token: str | None = None, *,
                   revision: str = "main", scan_roots: dict[str, Any] | None = None,
                   out: Callable[..., None] = print) -> Placed:
    """The catalogue model's GGUF shards into `<model_dir>/<model>/`, through `download_files`."""
    entry = CATALOGUE[model]
    if not entry.hf_repo:
        raise ParameterError("model", model, "a catalogue model with a Hub repo")
    target = Path(model_dir) / model
    got = download_files(entry.hf_repo, list(entry.hf_files), target, endpoint=endpoint, token=token,
                         revision=revision, family=model, copies_in=Path(model_dir), scan_roots=scan_roots, out=out)
    first = target / entry.hf_files[0]
    return Placed(model, str(first), got.size_bytes, f"hf://{entry.hf_repo}@{got.revision[:12]}", got.seconds,
                  repo=entry.hf_repo, revision=got.revision, files=got.files, fetched_bytes=got.fetched_bytes,
                  resumed_bytes=got.resumed_bytes, mb_per_s=got.mb_per_s,
                  verified=all(f["verified"] for f in got.files), notes=got.notes, other_copies=got.other_copies)


def place(model: str, model_dir: str = "", endpoint: str | None = None, source: str = "auto",
          chat_template: str = "", *, revision: str = "main", token: str | None = None,
          scan_roots: dict[str, Any] | None = None) -> Placed:
    from .errors import check_choice
    check_choice("source", source, SOURCES)
    directory = Path(model_dir).expanduser() if model_dir else records.home() / "models"
    if directory.exists() and not directory.is_dir():
        raise ParameterError("model_dir", model_dir, "a directory (it is a file)")
    directory.mkdir(parents=True, exist_ok=True)
    if is_embedded(model):
        return place_embedded(directory, model)
    if model in CATALOGUE and source == "generate":
        return place_generated(model, directory, chat_template)
    if model in CATALOGUE:
        return place_download(model, directory, endpoint, token, revision=revision or "main", scan_roots=scan_roots)
    raise ParameterError("model", model, ", ".join([*EMBEDDED, *CATALOGUE]))


def run(model_dir: str = "", hf_endpoint: str = "", source: str = "auto", chat_template: str = "", *,
        revision: str = "main", scan_roots: dict[str, Any] | None = None, engine: str = "") -> Placed:
    """Runbook 03: place the model 01 chose, in the layout 01's engine loads (GGUF shards, the Hub's
    safetensors, or an Ollama pull)."""
    from . import host
    from .engines import module, spec
    from .serve import chosen_engine

    state = records.load_state()
    if "choice" not in state:
        host.run()
        state = records.load_state()
    choice = records.section(state, "choice", "model")
    engine = chosen_engine(engine, "03-place-model")
    if engine != "llamacpp" and source == "generate":
        raise ParameterError("source", source, f"auto or hub with {spec(engine).label} (a generated stand-in is a "
                                               "GGUF: llama.cpp only)")
    placed = module(engine).place(choice["model"], model_dir or choice.get("model_dir", ""), hf_endpoint, revision,
                                  source=source, chat_template=chat_template, scan_roots=scan_roots)
    alias = EMBEDDED_FILES.get(placed.model, placed.model)
    records.update_state("model", {**placed.to_dict(), "alias": alias, "engine": engine,
                                   "weights": spec(engine).weights, "placed_at": records.now()})
    return placed
