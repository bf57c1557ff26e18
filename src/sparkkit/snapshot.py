"""Host snapshots: a box's raw command outputs and files in a directory, checked instead of the live host.

`sparkkit snapshot DIR` (or 01's `capture_to` parameter) captures this machine; `papermill
runbooks/01-preflight.ipynb out.ipynb -p host DIR` checks a snapshot. An owner can attach one to a
bug report; a person can write one by hand from what their box printed.

Format ``sparkkit.snapshot/1`` — a directory holding:

``SNAPSHOT`` (required)
    ``key: value`` lines. The first is ``format: sparkkit.snapshot/1``. Optional keys:
    ``captured`` (when, or where the lines come from), ``by``, ``machine`` (``uname -m``),
    ``home`` (what ``~`` means there, e.g. ``/home/<user>``), ``hf_token`` (``present`` or
    ``absent`` — never the token itself), ``absent`` (comma-separated files the box does not have,
    as opposed to files nobody recorded).
``files/<absolute path>``
    A copy of a file as the box had it: ``files/proc/meminfo``, ``files/etc/dgx-release``,
    ``files/etc/os-release``, ``files/sys/class/dmi/id/sys_vendor``, ``files/proc/swaps`` …
``commands/<any name>.txt``
    One command each. The first line is ``$ <command line>`` exactly as sparkkit runs it (see
    `COMMANDS`); an optional second line ``# exit N`` gives its exit status (absent: 0; 127: not
    found); the rest is what it printed, verbatim. ``df -P -k`` gives free disk space.
``PROVENANCE.md`` (optional)
    Where each line comes from, for snapshots written by hand.

Anything absent is "not in this snapshot": the check that needed it says ``skip`` and why. Serial
numbers (``DGX_SERIAL_NUMBER``, ``Serial Number :``, fwupd's ``"Serial"``), UUIDs, MAC addresses,
Hugging Face tokens, the host name and the user's name in paths are replaced by ``<redacted>`` when a snapshot
is captured, before anything is written. Serial-number files (DMI ``product_serial``) are never read.
"""
from __future__ import annotations

import codecs
import datetime as _dt
import os
import re
import shlex
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ParameterError
from .host import HostSource
from .pair import CAPTURE_COMMANDS

FORMAT = "sparkkit.snapshot/1"
FILES = ("/proc/meminfo", "/proc/swaps", "/etc/dgx-release", "/etc/os-release", "/etc/lsb-release",
         "/etc/fastos-release", *(f"/sys/class/dmi/id/{k}" for k in (
             "sys_vendor", "product_name", "product_version", "board_name", "bios_version", "bios_date")))
COMMANDS = (("nvidia-smi",), ("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"),
            ("nvidia-smi", "--query-gpu=name,compute_cap,memory.total,memory.free", "--format=csv,noheader"),
            ("uname", "-r"), ("uname", "-m"), ("df", "-P", "-k"), ("swapon", "--show", "--bytes"),
            ("nvcc", "--version"), ("/usr/local/cuda/bin/nvcc", "--version"),
            ("fwupdmgr", "get-devices", "--json"), ("fwupdmgr", "get-updates", "--json"),
            # what 01's pair checks read (sparkkit.pair): each network interface's driver, state, speed and MTU
            # from sysfs, the IPv4 addresses (`ip -4`: no MAC, no MAC-derived IPv6), and each engine's build
            *CAPTURE_COMMANDS)
ACCEPTED = ("a host snapshot directory: one made by `sparkkit snapshot DIR`, or a directory with a "
            f"SNAPSHOT file whose first line is 'format: {FORMAT}' (README: Host snapshots)")
REDACTED = "<redacted>"
_SECRETS = (
    # "DGX_SERIAL_NUMBER=…" (quoted or not), "Serial Number : …", "GPU UUID : …"
    (re.compile(r"(?im)^([ \t]*[\w .\-]*(?:serial|uuid)[\w .\-]*?[ \t]*[:=][ \t]*)(\"?)[^\"\n]+(\"?)[ \t]*$"),
     rf"\g<1>\g<2>{REDACTED}\g<3>"),
    # JSON: "Serial": "…", "DeviceUuid": "…"
    (re.compile(r"(?i)(\"[^\"\n]*(?:serial|uuid)[^\"\n]*\"\s*:\s*)\"[^\"\n]*\""), rf'\g<1>"{REDACTED}"'),
    (re.compile(r"\bhf_[A-Za-z0-9]{8,}"), REDACTED),
    (re.compile(r"(?i)\b((?:hf_|hugging_face_hub_)?token|api[_-]?key|secret|password)(\s*[:=]\s*)\S+"),
     rf"\g<1>\g<2>{REDACTED}"),
    (re.compile(r"\bGPU-[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}\b"), f"GPU-{REDACTED}"),
    # MAC addresses (a network interface's hardware address names the box as a serial number does)
    (re.compile(r"(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}(?![0-9A-Fa-f:])"), REDACTED),
)


def redact(text: str, names: tuple[tuple[str, str], ...] = ()) -> tuple[str, int]:
    """`text` with serial numbers, UUIDs and tokens replaced, and each (literal, replacement) applied."""
    count = 0
    for pattern, repl in _SECRETS:
        text, n = pattern.subn(repl, text)
        count += n
    for literal, repl in names:
        if literal:
            count += text.count(literal)
            text = text.replace(literal, repl)
    return text, count


def _identity() -> tuple[tuple[str, str], ...]:
    """This machine's host name and the user's name in paths, to take out of captured text."""
    pairs: list[tuple[str, str]] = []
    home = str(Path.home())
    if re.fullmatch(r"/home/[^/]+", home):
        pairs.append((home, "/home/<user>"))
    host = socket.gethostname()
    if len(host) >= 4 and host not in ("localhost", "ubuntu", "debian"):
        pairs.append((host, "<hostname>"))
    return tuple(pairs)


@dataclass
class Captured:
    path: Path
    files: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    redactions: int = 0

    def __str__(self) -> str:
        return (f"host snapshot at {self.path}: {len(self.files)} files, {len(self.commands)} command outputs "
                f"({len(self.missing)} not available here: {', '.join(self.missing) or 'none'}); "
                f"{self.redactions} serial/token/name value(s) redacted. Check it with: papermill "
                f"runbooks/01-preflight.ipynb out.ipynb -p host {self.path}; attach it to a bug report with: "
                f"tar czf host-snapshot.tgz -C {self.path} .")

    def _repr_markdown_(self) -> str:
        return str(self).replace(self.path.as_posix(), f"`{self.path.as_posix()}`")


def capture(directory: str | os.PathLike, source: HostSource | None = None,
            parameter: str = "capture_to") -> Captured:
    """Record this machine (or `source`) as a snapshot in `directory`, which must be new or empty."""
    src = source or HostSource()
    root = Path(directory).expanduser()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ParameterError(parameter, str(directory), "a new or empty directory for the snapshot")
    names = _identity() if not src.is_snapshot and source is None else ()
    out = Captured(root.resolve())
    (root / "files").mkdir(parents=True, exist_ok=True)
    (root / "commands").mkdir(exist_ok=True)
    absent: list[str] = []
    for path in FILES:
        text = src.read(path)
        if text is None:
            absent.append(path)
            continue
        text, n = redact(text, names)
        dest = root / "files" / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        out.files.append(path)
        out.redactions += n
    for i, argv in enumerate(COMMANDS, 1):
        rc, stdout = src.run_full(*argv, timeout=30.0 if argv[0] == "fwupdmgr" else 15.0)
        line = shlex.join(argv)
        body, n = redact(stdout, names)
        status = "" if rc == 0 else f"# exit {127 if rc is None else rc}\n"
        slug = re.sub(r"[^A-Za-z0-9]+", "-", line).strip("-")[:60]
        (root / "commands" / f"{i:02d}-{slug}.txt").write_text(f"$ {line}\n{status}{body}", encoding="utf-8")
        (out.commands if rc == 0 else out.missing).append(line)
        out.redactions += n
    home, _ = redact(str(Path.home()), names)
    token = src.hf_token()
    meta = {"format": FORMAT, "captured": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "by": "sparkkit snapshot (sparkkit.snapshot.capture)", "machine": src.machine(), "home": home,
            "hf_token": "present" if token else "absent", "absent": ", ".join(absent)}
    (root / "SNAPSHOT").write_text("".join(f"{k}: {v}\n" for k, v in meta.items()), encoding="utf-8")
    return out


MAX_FILE_BYTES = 1 << 20     # a recorded file or command output larger than this is read only this far


def read_contained(path: Path, root: Path) -> str | None:
    """The text of `path` if it is a regular file that resolves inside `root` (links anywhere in the
    snapshot must not lead out of it, or to a FIFO or device that would block or never end), at most
    MAX_FILE_BYTES of it, decoded whatever the encoding: a UTF-8 or UTF-16 byte-order mark is honoured,
    anything else is UTF-8 with undecodable bytes replaced. None when it cannot be used."""
    try:
        real = Path(path).resolve()
        if not real.is_relative_to(root) or not stat.S_ISREG(os.stat(real).st_mode):
            return None
        with open(real, "rb") as f:
            raw = f.read(MAX_FILE_BYTES)
    except (OSError, RuntimeError, ValueError):      # RuntimeError: a symlink loop
        return None
    for bom, codec in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                       (codecs.BOM_UTF16_BE, "utf-16-be")):
        if raw.startswith(bom):
            return raw[len(bom):].decode(codec, errors="replace").replace("\r\n", "\n")
    return raw.decode("utf-8", errors="replace").replace("\r\n", "\n")


class SnapshotSource(HostSource):
    """A recorded host: files from ``files/``, command outputs from ``commands/``, never the live host."""

    is_snapshot = True

    def __init__(self, root: Path, meta: dict[str, str], commands: dict[str, tuple[int, str]],
                 problems: list[str]):
        self.root, self.meta, self.commands, self.problems = root, meta, commands, problems
        self.label = f"snapshot {root.name}"

    def _file(self, path: str) -> Path | None:
        try:
            base = (self.root / "files").resolve()
            p = None if path.startswith("~") else (base / path.lstrip("/")).resolve()
        except (OSError, RuntimeError, ValueError):
            return None
        # inside files/, and files/ itself inside the snapshot (a linked files/ must not lead out)
        return p if p is not None and base.is_relative_to(self.root) and p.is_relative_to(base) else None

    def read(self, path: str) -> str | None:
        p = self._file(path)
        return read_contained(p, self.root) if p is not None else None

    def run_full(self, *argv: str, timeout: float = 10.0) -> tuple[int | None, str]:
        rc, out = self.commands.get(shlex.join(argv), (None, ""))
        return (None if rc == 127 else rc), out

    def recorded(self, key: str) -> bool:
        if key in self.commands or key in (p.strip() for p in self.meta.get("absent", "").split(",")):
            return True
        p = self._file(key)
        return p is not None and read_contained(p, self.root) is not None

    def machine(self) -> str:
        return self.meta.get("machine") or (self.run("uname", "-m") or "").strip()

    def disk_free(self, path: str) -> int | None:
        """Free bytes on the recorded mount that holds `path` (`~` is the snapshot's home)."""
        home = self.meta.get("home", "/root")
        target = os.path.normpath(home + path[1:] if path.startswith("~") else path)
        best: tuple[int, int] | None = None
        for line in (self.run("df", "-P", "-k") or "").splitlines()[1:]:
            parts = line.split()
            if len(parts) < 6 or not (parts[3].isascii() and parts[3].isdigit()):
                continue
            mount = " ".join(parts[5:])
            if target == mount or target.startswith(mount.rstrip("/") + "/"):
                if best is None or len(mount) > best[0]:
                    best = (len(mount), int(parts[3]) * 1024)
        return best[1] if best else None

    def file_size(self, path: str) -> int | None:
        return None

    def exists(self, path: str) -> bool:
        p = self._file(path)
        return p is not None and read_contained(p, self.root) is not None

    def env_has(self, name: str) -> bool:
        return False

    def hf_token(self) -> bool | None:
        said = self.meta.get("hf_token", "").split()
        return None if not said else said[0] == "present"


def load(directory: str | os.PathLike, parameter: str = "host") -> SnapshotSource:
    """Open a snapshot directory; a missing one, or one that is not a snapshot, is a ParameterError."""
    root = Path(directory).expanduser()
    marker = root / "SNAPSHOT"
    if not root.is_dir() or not marker.is_file():
        why = "does not exist" if not root.exists() else "is not a directory" if not root.is_dir() \
            else "has no SNAPSHOT file"
        raise ParameterError(parameter, str(directory), f"{ACCEPTED} — this path {why}")
    root = root.resolve()
    marker_text = read_contained(marker, root)
    if marker_text is None:
        raise ParameterError(parameter, str(directory), f"{ACCEPTED} — its SNAPSHOT is not a regular file inside it")
    meta: dict[str, str] = {}
    for line in marker_text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip():
            meta.setdefault(key.strip(), value.strip())
    if meta.get("format") != FORMAT:
        raise ParameterError(parameter, str(directory), f"{ACCEPTED} — its SNAPSHOT says format "
                             f"{meta.get('format')!r}")
    commands: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    commands_dir = root / "commands"
    try:
        inside = commands_dir.is_dir() and commands_dir.resolve().is_relative_to(root)
    except (OSError, RuntimeError):
        inside = False
    if commands_dir.exists() and not inside:
        problems.append("commands/: not a folder inside the snapshot; ignored")
    for p in sorted(commands_dir.glob("*.txt")) if inside else []:
        text = read_contained(p, root)
        if text is None:
            problems.append(f"commands/{p.name}: not a regular file inside the snapshot; ignored")
            continue
        first, _, rest = text.partition("\n")
        if not first.startswith("$ "):
            problems.append(f"commands/{p.name}: first line is not '$ <command>'; ignored")
            continue
        try:
            key = shlex.join(shlex.split(first[2:]))
        except ValueError:
            problems.append(f"commands/{p.name}: cannot parse the command line; ignored")
            continue
        rc = 0
        if m := re.match(r"# exit (\d+)\n?", rest, re.ASCII):
            rc, rest = int(m.group(1)), rest[m.end():]
        commands[key] = (rc, rest)
    return SnapshotSource(root, meta, commands, problems)
