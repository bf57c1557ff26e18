"""Every command the README gives works verbatim in a fresh checkout after `make setup`.

The commands are the lines of its ```bash blocks and the inline `…` spans that are command lines
(a program and arguments). Each is checked without its side effects where it would start a server, a
download or a build — the program exists in the venv (or is a Makefile target), every file it names
is in the checkout, every `-p`/`-y` parameter is one the runbook takes, every `--flag` is one the
subcommand takes — and the cheap ones run for real. The README's `papermill …` lines failed as written
("papermill: command not found" outside the venv); they are `.venv/bin/papermill` now.
"""
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent           # the checkout's .venv/bin when run by `make test`
README = (ROOT / "README.md").read_text()
PROGRAMS = ("make", ".venv/bin/", "papermill", "sparkkit", "tar", "conda", ". .venv", "python", "pip", "jupyter")


def commands() -> list[tuple[int, str]]:
    """(line, command) for each command the README gives, comments dropped."""
    found = []
    for m in re.finditer(r"^```bash\n(.*?)^```", README, re.M | re.S):
        first = README[:m.start()].count("\n") + 2
        for i, line in enumerate(m.group(1).splitlines()):
            cmd = line.split("  #")[0].strip()
            if cmd and not cmd.startswith("#"):
                found.append((first + i, cmd))
    for m in re.finditer(r"(?<!`)`([^`\n]+(?:\n[^`\n]+)?)`(?!`)", README):
        span = " ".join(m.group(1).split())
        tokens = span.split()
        if not span.startswith(PROGRAMS) or span.startswith("sparkkit run:"):
            continue
        if len(tokens) == 1 or (span.startswith(("sparkkit", "papermill")) and len(tokens) <= 2 and "-" not in span):
            continue                                  # a name in prose ("`sparkkit run` takes …"), not a command line
        found.append((README[:m.start()].count("\n") + 1, span))
    return found


COMMANDS = commands()


def _is_template(cmd: str) -> bool:
    return any(t in cmd for t in ("…", "|", "[", "<"))


def _targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))


def _run(argv, home: Path, timeout=120):
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_has_commands_to_check():
    assert len(COMMANDS) >= 15 and any(c.startswith("make lab") for _, c in COMMANDS)


@pytest.mark.parametrize("line,cmd", COMMANDS, ids=[f"L{n}" for n, _ in COMMANDS])
def test_readme_command_works_verbatim(line, cmd, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    argv = shlex.split(cmd.replace("…", "")) if not _is_template(cmd) else cmd.split()
    prog = argv[0]
    assert prog not in ("papermill", "sparkkit", "python", "pip", "jupyter"), (
        f"README line {line}: `{cmd}` needs the venv on PATH: write .venv/bin/{prog}")
    if prog == "make":
        names = [a for a in argv[1:] if "=" not in a]
        assert names and set(names) <= _targets(), f"README line {line}: no Makefile target {names}"
        return
    if prog == ".":
        assert (ROOT / argv[1]).is_file() or (BIN / Path(argv[1]).name).is_file(), line
        return
    if prog == "conda":
        assert (ROOT / argv[argv.index("-f") + 1]).is_file()
        return
    if prog == "tar":
        # attach-the-snapshot line: runs for real on a snapshot made the README's way
        snap = home / "spark-snapshot"
        out = _run([str(BIN / "sparkkit"), "snapshot", str(snap)], home)
        assert out.returncode == 0, out.stderr[-2000:]
        out = subprocess.run(["tar", "czf", str(tmp_path / "s.tgz"), "-C", str(snap), "."], capture_output=True)
        assert out.returncode == 0 and (tmp_path / "s.tgz").stat().st_size > 0
        return
    assert prog.startswith(".venv/bin/"), f"README line {line}: unexpected program {prog}"
    exe = BIN / prog.removeprefix(".venv/bin/")
    assert exe.is_file() and os.access(exe, os.X_OK), f"README line {line}: {exe} is not in the venv"
    args = argv[1:]
    if exe.name == "python":
        assert args[:2] == ["-m", "ipykernel"]
        out = _run([str(exe), *args[:3], "--help"], home)
        assert out.returncode == 0 and all(f.split("=")[0] in out.stdout for f in args if f.startswith("--")), line
        # for real, into this test's own Jupyter data dir (never the user's)
        env = {**os.environ, "HOME": str(home), "JUPYTER_DATA_DIR": str(tmp_path / "jdata")}
        out = subprocess.run([str(exe), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert (tmp_path / "jdata" / "kernels" / "sparkkit" / "kernel.json").is_file()
        return
    if exe.name == "papermill":
        nb = next(a for a in args if a.endswith(".ipynb"))
        assert (ROOT / nb).is_file(), f"README line {line}: {nb} is not in the checkout"
        out = _run([str(exe), "--help-notebook", nb], home)
        assert out.returncode == 0, out.stderr[-2000:]
        taken = set(re.findall(r"^\s+(\w+): ", out.stdout, re.M))
        given = [args[i + 1] for i, a in enumerate(args) if a == "-p"]
        given += [k.strip() for i, a in enumerate(args) if a == "-y" for k in re.findall(r"(\w+):", args[i + 1])]
        assert set(given) <= taken, f"README line {line}: {set(given) - taken} not parameters of {nb}"
        return
    assert exe.name == "sparkkit", line
    sub = args[0]
    out = _run([str(exe), sub, "--help"] if sub != "claude" else [str(exe), "--help"], home)
    assert out.returncode == 0, f"README line {line}: {out.stderr[-1000:]}"
    flags = {a.split("=")[0] for a in args[1:] if a.startswith("--") and a != "--help"}
    assert all(f in out.stdout for f in flags), f"README line {line}: {flags} not all in `sparkkit {sub} --help`"
    if sub in ("wired", "kernel") and not _is_template(cmd) and "--help" not in args:
        env = {"JUPYTER_DATA_DIR": str(tmp_path / "jdata")}
        out = subprocess.run([str(exe), *args], cwd=ROOT, env={**os.environ, "HOME": str(home), **env},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, f"README line {line}: {out.stdout[-500:]}{out.stderr[-1000:]}"


def test_every_link_in_the_readme_stays_inside_the_checkout():
    """A relative link resolves to a file of this repository (a fresh clone has nothing beside it)."""
    for target in re.findall(r"\]\(([^)#\s]+)[^)]*\)", README):
        if re.match(r"[a-z]+:", target):
            continue                                  # https:, mailto: …
        path = (ROOT / target).resolve()
        assert path.is_relative_to(ROOT) and path.exists(), f"README links to {target}, outside the checkout"
