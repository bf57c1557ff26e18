"""Runbook 03's download on real parts: the real huggingface_hub client and httpx against a local
Hub-shaped server (tests/hubserver.py) serving real GGUF shards of the embedded model, split as
llama.cpp's gguf-split splits them. Resume is proven by the bytes the server actually sent."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import namedtuple
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from hubserver import HubServer  # noqa: E402

from sparkkit import download, records  # noqa: E402
from sparkkit.errors import SparkkitError  # noqa: E402
from sparkkit.model import CATALOGUE, from_gguf  # noqa: E402
from sparkkit.tinymodel import REPLY_TEXT, split_gguf  # noqa: E402

MODEL = "gpt-oss-120b"
GGUF_REPO = CATALOGUE[MODEL].hf_repo
SHARDS = list(CATALOGUE[MODEL].hf_files)
ST_REPO = "openai/gpt-oss-120b"
TOKEN = "hf_testsecretTOKEN123"
Usage = namedtuple("Usage", "total used free")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def hub_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    gen = tmp_path_factory.mktemp("gen")
    whole = download.place_embedded(gen).path
    repo = root / GGUF_REPO
    shards = split_gguf(whole, repo, "gpt-oss-120b-mxfp4", 3)
    assert [p.name for p in shards] == SHARDS
    (repo / "README.md").write_text("# gpt-oss-120b GGUF (test copy)\n")
    (repo / ".gitattributes").write_text("*.gguf filter=lfs diff=lfs merge=lfs -text\n")
    st = root / ST_REPO
    rng = __import__("random").Random(7)
    for rel, n in [("config.json", 0), ("model-00001-of-00002.safetensors", 200_000),
                   ("model-00002-of-00002.safetensors", 150_000), ("original/model.safetensors", 90_000),
                   ("original/config.json", 0), ("metal/model.bin", 80_000)]:
        p = st / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rng.randbytes(n) if n else b'{"model_type": "gpt_oss"}\n')
    (st / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
                                       "*.bin filter=lfs diff=lfs merge=lfs -text\n")
    return root


@pytest.fixture(scope="module")
def hub(hub_root):
    with HubServer(hub_root) as server:
        yield server


@pytest.fixture(autouse=True)
def fresh(hub, tmp_path, monkeypatch):
    hub.faults.clear()
    hub.state.reset_counts()
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(download, "BACKOFF_S", 0.01)
    monkeypatch.setattr(download, "BACKOFF_MAX_S", 0.05)
    yield
    hub.faults.clear()


@pytest.fixture
def roots(tmp_path):
    """Where find_copies looks: empty tmp dirs unless a test fills them."""
    return {"hf_cache": tmp_path / "hf-cache", "ollama_roots": [tmp_path / "ollama"], "llama_cache": tmp_path / "lc"}


def place(hub, tmp_path, roots, **kw):
    return download.place(MODEL, str(tmp_path / "models"), hub.endpoint, scan_roots=roots, **kw)


def shard(hub, i: int) -> Path:
    return hub.state.root / GGUF_REPO / SHARDS[i]


def leftovers(tmp_path) -> list[str]:
    return [str(p) for p in tmp_path.rglob("*")
            if p.name.endswith((".part", ".part.json", ".incomplete")) or p.name == download.PARTIAL_DIR]


# ------------------------------------------------------------------------------------------ 1
def test_full_download_through_the_runbook_path(hub, tmp_path, roots, capsys, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    records.update_state("choice", {"model": MODEL, "model_dir": str(tmp_path / "models")})
    placed = download.run(hf_endpoint=hub.endpoint, scan_roots=roots)
    target = tmp_path / "models" / MODEL
    assert placed.path == str(target / SHARDS[0]) and placed.verified is True
    assert placed.repo == GGUF_REPO and len(placed.revision) == 40
    for i, name in enumerate(SHARDS):
        assert (target / name).read_bytes() == shard(hub, i).read_bytes()
    rows = {r["name"]: r for r in placed.files}
    assert list(rows) == SHARDS
    for i, name in enumerate(SHARDS):
        r = rows[name]
        size = shard(hub, i).stat().st_size
        assert (r["size_bytes"], r["sha256"], r["fetched_bytes"], r["resumed_bytes"], r["verified"]) == \
               (size, sha256(shard(hub, i)), size, 0, True)
        assert r["status"] == "downloaded" and isinstance(r["seconds"], float) and "mb_per_s" in r
        print(f"{name}: {r['seconds']:.3f} s, {r['mb_per_s']} MB/s")
        assert hub.sent[name] == size and hub.gets[name] == 1
    assert placed.size_bytes == placed.fetched_bytes == sum(shard(hub, i).stat().st_size for i in range(3))
    assert leftovers(tmp_path) == []
    assert (target / download.SIDECAR).is_file()
    # the token went to the Hub, never to the CDN the LFS redirect points at, never into output or records
    assert any(r["auth"] for r in hub.requests if not r["cdn"])
    cdn = [r for r in hub.requests if r["cdn"]]
    assert len(cdn) == 3 and not any(r["auth"] for r in cdn)
    out = capsys.readouterr().out
    for name in SHARDS:
        assert f"fetching {name}" in out and f"{name}: done" in out
    verdict = records.finish("03-place-model", *placed.record(), tmp_path / "run")
    saved = json.loads(verdict.record_path.read_text())
    assert [f["sha256"] for f in saved["results"]["files"]] == [rows[n]["sha256"] for n in SHARDS]
    state = records.state_path().read_text()
    assert TOKEN not in out and TOKEN not in verdict.record_path.read_text() and TOKEN not in state
    assert json.loads(state)["model"]["path"] == placed.path
    table = placed.table()
    assert list(table["name"]) == SHARDS and table["verified"].all()
    # llama.cpp's own layout: the downloaded split reads back as the model
    arch = from_gguf(placed.path)
    assert arch.arch == "gpt-oss" and "+2 shards" in arch.source


def test_split_shards_are_served_by_llama_cpp(hub, tmp_path):
    from sparkkit import serve
    from sparkkit.engines.launch import Launch
    import gguf
    first = shard(hub, 0)
    whole = from_gguf(first)
    assert whole.weights_bytes > 0 and whole.n_layer == 2
    readers = [gguf.GGUFReader(shard(hub, i)) for i in range(3)]      # gguf-split's layout
    assert [r.fields["split.no"].contents() for r in readers] == [0, 1, 2]
    assert {r.fields["split.count"].contents() for r in readers} == {3}
    n_tensors = sum(len(r.tensors) for r in readers)
    assert {r.fields["split.tensors.count"].contents() for r in readers} == {n_tensors}
    assert all(len(r.tensors) > 0 for r in readers)
    assert "tokenizer.ggml.tokens" in readers[0].fields and "tokenizer.ggml.tokens" not in readers[1].fields
    try:
        started = serve.start(Launch(model=str(first), alias=MODEL, context=4096, port=serve.free_port(), threads=2),
                              {"kind": "embedded"}, timeout=120)
        r = httpx.post(started.base_url + "/v1/chat/completions", timeout=60,
                       json={"model": MODEL, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 64})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == REPLY_TEXT
    finally:
        serve.stop()


# ------------------------------------------------------------------------------------------ 2
def test_a_dropped_connection_resumes_within_the_run(hub, tmp_path, roots, capsys):
    size = shard(hub, 0).stat().st_size
    hub.faults.update({"drop_after": {SHARDS[0]: size // 2}})
    placed = place(hub, tmp_path, roots)
    assert placed.verified
    assert hub.gets[SHARDS[0]] == 2                               # one drop, one resumed request
    assert size <= hub.sent[SHARDS[0]] <= size * 1.01 + download.IN_FLIGHT
    ranges = [r["range"] for r in hub.requests if r["cdn"] and SHARDS[0] in r["path"]]
    assert ranges[0] is None and ranges[1] == f"bytes={size // 2}-"
    assert (tmp_path / "models" / MODEL / SHARDS[0]).read_bytes() == shard(hub, 0).read_bytes()
    assert "resuming at byte" in capsys.readouterr().out
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ 3
KILLED = r"""
import sys
from pathlib import Path
from sparkkit import download
download.place_download("gpt-oss-120b", Path(sys.argv[1]), sys.argv[2], scan_roots={"hf_cache": Path(sys.argv[3]),
                        "ollama_roots": [], "llama_cache": Path(sys.argv[3])})
"""


def test_a_killed_download_resumes_on_the_next_run(hub, tmp_path, roots):
    size = shard(hub, 0).stat().st_size
    hub.faults.update({"rate": 300_000})
    models = tmp_path / "models"
    part = download.partial_path(models / MODEL, SHARDS[0])
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(models), hub.endpoint, str(tmp_path / "none")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(6000):                   # a hang guard (about 2 min), not a speed check
            if part.exists() and part.stat().st_size >= size // 4:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.02)
        else:
            pytest.fail("the partial never grew")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    at_kill = part.stat().st_size
    assert 0 < at_kill < size and not (models / MODEL / SHARDS[0]).exists()
    for _ in range(100):                        # let the server notice the dead client
        before = hub.sent.get(SHARDS[0], 0)
        time.sleep(0.05)
        if hub.sent.get(SHARDS[0], 0) == before and before >= at_kill:
            break
    sent_before = hub.sent[SHARDS[0]]
    hub.faults.update({"rate": 0})
    placed = download.place(MODEL, str(models), hub.endpoint, scan_roots=roots)
    sent_after = hub.sent[SHARDS[0]] - sent_before
    row = placed.files[0]
    assert row["resumed_bytes"] == at_kill and row["fetched_bytes"] == size - at_kill == sent_after
    assert sent_before + sent_after - size <= size * 0.01 + download.IN_FLIGHT       # bytes sent twice
    assert (models / MODEL / SHARDS[0]).read_bytes() == shard(hub, 0).read_bytes()
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ 4
def test_a_flipped_byte_is_caught_kept_aside_and_fetched_again(hub, tmp_path, roots):
    hub.faults.update({"corrupt": {SHARDS[1]: 4096}})
    with pytest.raises(SparkkitError) as e:
        place(hub, tmp_path, roots)
    msg = str(e.value)
    assert SHARDS[1] in msg and "hash mismatch" in msg and "re-run 03" in msg and msg.count(". ") == 0
    target = tmp_path / "models" / MODEL
    bad = list(target.glob(SHARDS[1] + ".bad-*"))
    assert len(bad) == 1 and str(bad[0]) in msg
    assert bad[0].read_bytes()[4096] == shard(hub, 1).read_bytes()[4096] ^ 0xFF
    assert not (target / SHARDS[1]).exists()                                   # never under the final name
    assert (target / SHARDS[0]).is_file() and (target / SHARDS[2]).is_file()   # the others were verified
    hub.faults.clear()
    hub.state.reset_counts()
    placed = place(hub, tmp_path, roots)
    assert placed.verified and (target / SHARDS[1]).read_bytes() == shard(hub, 1).read_bytes()
    assert set(hub.gets) == {SHARDS[1]}                                        # only the bad one again
    assert any("kept aside" in n and str(bad[0]) in n for n in placed.notes)
    assert bad[0].exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ 5
def test_too_little_disk_is_refused_before_any_byte(hub, tmp_path, roots, monkeypatch, capsys):
    monkeypatch.setattr(download, "RETRIES", 0)
    sizes = [shard(hub, i).stat().st_size for i in range(3)]
    hub.faults.update({"drop_after": {SHARDS[0]: 400_000}})
    with pytest.raises(SparkkitError):                # leaves a 400 kB partial behind
        place(hub, tmp_path, roots)
    monkeypatch.setattr(download, "RETRIES", 5)
    hub.state.reset_counts()
    need = sum(sizes) - 400_000
    monkeypatch.setattr(download, "HEADROOM_BYTES", 0)
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: Usage(10**12, 10**12 - need + 1, need - 1))
    with pytest.raises(SparkkitError) as e:
        place(hub, tmp_path, roots)
    msg = str(e.value)
    assert download._human(need) in msg and download._human(need - 1) in msg and "free" in msg
    assert "-p model_dir" in msg and GGUF_REPO in msg
    assert hub.sent == {} and hub.gets == {}
    # enough room: no refusal; with the warning threshold lowered, the warning line and note
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: Usage(10**12, 0, need))
    monkeypatch.setattr(download, "WARN_BYTES", need)
    capsys.readouterr()
    placed = place(hub, tmp_path, roots)
    assert "WARNING: about to fetch" in capsys.readouterr().out
    assert any("about to fetch" in n for n in placed.notes)
    assert hub.sent[SHARDS[0]] == sizes[0] - 400_000 and placed.resumed_bytes == 400_000


# ------------------------------------------------------------------------------------------ 6
@pytest.mark.parametrize("code, words", [(401, ["hf auth login", "HF_TOKEN", "401"]),
                                         (403, ["hf auth login", "HF_TOKEN", "403"]),
                                         (404, ["not found", "404"]),
                                         (500, ["Hub failed", "HTTP 500", "re-run 03 to resume"])])
def test_hub_errors_are_one_sentence_naming_the_file(hub, tmp_path, roots, code, words):
    hub.faults.update({"status": {"mxfp4-00002-of-00003.gguf": code}})
    with pytest.raises(SparkkitError) as e:
        place(hub, tmp_path, roots)
    msg = str(e.value)
    assert SHARDS[1] in msg and all(w in msg for w in words), msg
    assert "\n" not in msg and TOKEN not in msg
    target = tmp_path / "models" / MODEL
    assert not (target / SHARDS[1]).exists()
    assert (target / SHARDS[0]).read_bytes() == shard(hub, 0).read_bytes()      # verified bytes kept
    tries = [r for r in hub.requests if not r["cdn"] and SHARDS[1] in r["path"]]
    assert len(tries) == (download.RETRIES + 1 if code == 500 else 1)


def test_repo_level_errors(hub, tmp_path, roots):
    hub.faults.update({"status": {"/api/models/": 401}})
    with pytest.raises(SparkkitError, match=r"hf auth login.*HF_TOKEN"):
        place(hub, tmp_path, roots)
    hub.faults.clear()
    with pytest.raises(SparkkitError, match=r"repository ggml-org/nope was not found .*404"):
        download.download_files("ggml-org/nope", None, tmp_path / "x", endpoint=hub.endpoint)
    with pytest.raises(SparkkitError, match=r"revision 'v9' of .* not found"):
        download.download_files(GGUF_REPO, None, tmp_path / "x", endpoint=hub.endpoint, revision="v9")
    with pytest.raises(SparkkitError, match=r"no-such\.gguf was not found"):
        download.download_files(GGUF_REPO, ["no-such.gguf"], tmp_path / "x", endpoint=hub.endpoint)
    assert hub.gets == {} and not list((tmp_path / "models").rglob("*.gguf"))


# ------------------------------------------------------------------------------------------ 7
def test_a_zero_filled_file_of_the_right_size_is_refetched(hub, tmp_path, roots, capsys):
    target = tmp_path / "models" / MODEL
    target.mkdir(parents=True)
    size = shard(hub, 0).stat().st_size
    (target / SHARDS[0]).write_bytes(b"\0" * size)
    (target / ".cache" / "huggingface" / "download").mkdir(parents=True)
    (target / ".cache" / "huggingface" / "download" / "x.abc123.incomplete").write_bytes(b"old")
    placed = place(hub, tmp_path, roots)
    assert (target / SHARDS[0]).read_bytes() == shard(hub, 0).read_bytes()
    bad = list(target.glob(SHARDS[0] + ".bad-*"))
    assert len(bad) == 1 and bad[0].read_bytes() == b"\0" * size
    assert hub.sent[SHARDS[0]] == size and placed.verified
    out = capsys.readouterr().out
    assert "wrong hash" in out and "huggingface_hub *.incomplete" in out
    assert leftovers(tmp_path) == []


# ------------------------------------------------------------------------------------------ 8
def test_a_rerun_fetches_nothing_and_trusts_the_sidecar(hub, tmp_path, roots, monkeypatch):
    first = place(hub, tmp_path, roots)
    hub.state.reset_counts()
    monkeypatch.setattr(download, "_hash_file", lambda *a, **k: pytest.fail("re-hashed a remembered file"))
    again = place(hub, tmp_path, roots)
    assert hub.gets == {} and hub.sent == {} and again.fetched_bytes == 0
    assert again.verified and [f["sha256"] for f in again.files] == [f["sha256"] for f in first.files]
    assert {f["status"] for f in again.files} == {"verified earlier (sidecar)"}
    # a file touched since (mtime changed) is hashed once more, not downloaded
    monkeypatch.undo()
    p = tmp_path / "models" / MODEL / SHARDS[2]
    os.utime(p, ns=(p.stat().st_atime_ns, p.stat().st_mtime_ns + 10**9))
    third = place(hub, tmp_path, roots)
    assert hub.gets == {} and third.files[2]["status"] == "verified in place"


# ------------------------------------------------------------------------------------------ 9
def test_other_copies_are_listed_with_sizes_and_removal_commands(hub, tmp_path, roots, capsys):
    models = tmp_path / "models"
    (models / "gpt-oss-20b").mkdir(parents=True)
    (models / "gpt-oss-20b" / "gpt-oss-20b-mxfp4.gguf").write_bytes(b"x" * 5000)
    (models / "gpt-oss-120b-scripted.gguf").write_bytes(b"y" * 3000)
    (models / "unrelated.gguf").write_bytes(b"z")
    hf = roots["hf_cache"] / "models--unsloth--gpt-oss-120b-GGUF"
    (hf / "blobs").mkdir(parents=True)
    (hf / "blobs" / "abc").write_bytes(b"b" * 7000)
    (hf / "snapshots" / "c0ffee").mkdir(parents=True)
    (hf / "snapshots" / "c0ffee" / "model.gguf").symlink_to(hf / "blobs" / "abc")
    (roots["hf_cache"] / "models--bert--base" / "blobs").mkdir(parents=True)
    man = roots["ollama_roots"][0] / "manifests" / "registry.ollama.ai" / "library"
    (man / "gpt-oss").mkdir(parents=True)
    (man / "gpt-oss" / "120b").write_text(json.dumps({"config": {"size": 100},
                                                      "layers": [{"size": 65_000_000_000}, {"size": 900}]}))
    (man / "llama3").mkdir()
    (man / "llama3" / "latest").write_text(json.dumps({"layers": [{"size": 5}]}))
    roots["llama_cache"].mkdir()
    (roots["llama_cache"] / "ggml-org_gpt-oss-20b-GGUF_gpt-oss-20b-mxfp4.gguf").write_bytes(b"l" * 1000)
    placed = place(hub, tmp_path, roots)
    found = {c["what"]: c for c in placed.other_copies}
    assert set(found) == {"gpt-oss-20b", "gpt-oss-120b-scripted.gguf", "unsloth/gpt-oss-120b-GGUF", "gpt-oss:120b",
                          "ggml-org_gpt-oss-20b-GGUF_gpt-oss-20b-mxfp4.gguf"}
    assert found["gpt-oss-20b"]["size_bytes"] == 5000
    assert found["gpt-oss-20b"]["remove"] == f"rm -rf -- {models / 'gpt-oss-20b'}"
    assert found["unsloth/gpt-oss-120b-GGUF"]["size_bytes"] == 7000      # blobs once, symlinks not counted
    assert found["unsloth/gpt-oss-120b-GGUF"]["remove"].startswith("hf cache rm model/unsloth/gpt-oss-120b-GGUF")
    assert found["gpt-oss:120b"]["size_bytes"] == 65_000_001_000 and found["gpt-oss:120b"]["size"] == "65.0 GB"
    assert found["gpt-oss:120b"]["remove"] == "ollama rm gpt-oss:120b"
    assert "bad" not in " ".join(placed.notes)
    out = capsys.readouterr().out
    assert "ollama rm gpt-oss:120b" in out and "65.0 GB" in out
    shown = placed.copies_table()                          # 03 displays this: every removal command whole
    assert all(c["remove"] in repr(shown) for c in placed.other_copies)
    verdict, headline, _ = placed.record()
    assert verdict == "warn" and "5 other copies" in headline


# ------------------------------------------------------------------------------------------ 10
def test_safetensors_repo_skips_original_and_metal(hub, tmp_path):
    dest = tmp_path / "st"
    got = download.download_files(ST_REPO, None, dest, endpoint=hub.endpoint, out=lambda *a, **k: None)
    names = sorted(f["name"] for f in got.files)
    assert names == [".gitattributes", "config.json", "model-00001-of-00002.safetensors",
                     "model-00002-of-00002.safetensors"]
    assert not (dest / "original").exists() and not (dest / "metal").exists()
    assert not any(k.startswith(("original/", "metal/")) for k in hub.gets)
    assert all(f["verified"] for f in got.files)
    assert (dest / "config.json").read_bytes() == (hub.state.root / ST_REPO / "config.json").read_bytes()
    # patterns, and an explicit excluded path taken as asked
    got = download.download_files(ST_REPO, ["*.safetensors", "original/config.json"], tmp_path / "st2",
                                  endpoint=hub.endpoint, out=lambda *a, **k: None)
    assert sorted(f["name"] for f in got.files) == ["model-00001-of-00002.safetensors",
                                                     "model-00002-of-00002.safetensors", "original/config.json"]


# ------------------------------------------------------------------------------------------ 11
def test_a_full_disk_mid_file_keeps_the_partial(hub, tmp_path, roots, monkeypatch):
    real, written = download._write, [0]

    def filling(fd, data):
        if written[0] > 300_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, data)
        written[0] += len(data)

    monkeypatch.setattr(download, "_write", filling)
    with pytest.raises(SparkkitError) as e:
        place(hub, tmp_path, roots)
    msg = str(e.value)
    assert SHARDS[0] in msg and "disk filled up" in msg and "free at least" in msg and "re-run 03" in msg
    part = download.partial_path(tmp_path / "models" / MODEL, SHARDS[0])
    kept = part.stat().st_size
    assert kept > 300_000 and str(part) in msg
    assert not (tmp_path / "models" / MODEL / SHARDS[0]).exists()
    monkeypatch.setattr(download, "_write", real)
    hub.state.reset_counts()
    placed = place(hub, tmp_path, roots)
    assert placed.files[0]["resumed_bytes"] == kept and hub.sent[SHARDS[0]] == shard(hub, 0).stat().st_size - kept
    assert leftovers(tmp_path) == []


def test_no_orphan_partials_after_success(hub, tmp_path, roots):
    target = tmp_path / "models" / MODEL
    (target / download.PARTIAL_DIR / "old-name.gguf.part").parent.mkdir(parents=True)
    (target / download.PARTIAL_DIR / "old-name.gguf.part").write_bytes(b"x" * 100)
    placed = place(hub, tmp_path, roots)
    assert placed.verified and leftovers(tmp_path) == [] and any("stale" in n for n in placed.notes)
