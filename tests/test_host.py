"""01's checks, proven on recorded hosts.

tests/snapshots/* are host snapshots built only from real recorded outputs (each PROVENANCE.md names
its sources and the research/spark.md section citing them). The synthetic inputs below are limited
to what no record can give: a fake serial number and token to prove redaction, odd or broken
output to prove nothing crashes, and one-line variations of a recorded snapshot, each labelled.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import papermill as pm
import pytest

from sparkkit import host, snapshot
from sparkkit.engines import check_engine
from sparkkit.errors import ParameterError
from sparkkit.model import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
SNAPS = ROOT / "tests" / "snapshots"
GIB = 2**30
NAMES = ("platform", "GPU driver", "CUDA toolkit on PATH", "DGX OS", "firmware", "usable memory", "page cache",
         "swap", "disk", "HF token")
P, W, F, S = "pass", "warn", "fail", "skip"


def table(*statuses):
    return dict(zip(NAMES, statuses, strict=True))


# snapshot, engine → the verdict and the whole verdict table (model auto)
VERDICTS = {
    ("dgx-spark-fe-7.3.1", "llamacpp"): (P, table(P, P, P, P, S, P, P, S, S, S)),
    ("dgx-spark-fe-7.3.1", "sglang"): (W, table(P, P, P, P, S, P, W, S, S, S)),
    ("asus-gx10-dgxos-7.6.0", "llamacpp"): (F, table(P, P, S, P, S, F, P, P, S, S)),
    ("gx10-odd-encodings", "llamacpp"): (F, table(P, P, S, P, S, F, P, P, S, S)),    # the same box, odd bytes
    ("asus-gx10-dgxos-7.6.0", "sglang"): (F, table(P, P, P, P, S, F, W, W, S, S)),
    ("asus-gx10-dgxos-7.6.0", "ollama"): (F, table(P, P, P, P, S, F, P, P, S, P)),
    ("hp-zgx-nano-dgxos-7.5.0", "llamacpp"): (P, table(P, P, S, P, S, S, S, S, S, S)),
    ("gb10-driver-595", "llamacpp"): (F, table(P, W, S, P, S, F, P, P, S, S)),
    ("spark-cuda-not-on-path", "llamacpp"): (W, table(P, P, W, S, S, S, S, S, S, S)),
    ("spark-cuda-not-on-path", "vllm"): (P, table(P, P, P, S, S, S, S, S, S, S)),
    ("nvidia-h100-not-gb10", "llamacpp"): (W, table(W, P, P, S, S, P, S, P, P, P)),
    ("nvidia-h100-not-gb10", "sglang"): (W, table(W, P, P, S, S, P, S, P, P, P)),
    ("x86-debian12-no-gpu", "llamacpp"): (P, table(S, S, S, S, S, P, S, P, P, P)),
    ("x86-debian12-no-gpu", "sglang"): (F, table(F, S, S, S, S, F, S, P, P, P)),
    ("x86-debian12-no-gpu", "ollama"): (F, table(W, S, S, S, S, F, S, P, P, P)),
    # the GX10 above as the two nodes of a pair (tests/test_pair.py): alone, each is that box
    ("gx10-pair-a", "llamacpp"): (F, table(P, P, S, P, S, F, P, P, S, S)),
    ("gx10-pair-b", "vllm"): (F, table(P, P, P, P, S, F, W, P, S, S)),
}


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def check(report, name):
    return next(c for c in report.checks if c.name == name)


# ----------------------------------------------------------------------------- the recorded hosts
@pytest.mark.parametrize("name,engine", VERDICTS, ids=[f"{s}-{e}" for s, e in VERDICTS])
def test_verdict_table_of_each_recorded_host(name, engine, home):
    report, _ = host.run(engine=engine, host=str(SNAPS / name))
    verdict, statuses = VERDICTS[name, engine]
    assert report.statuses() == statuses, report.table().to_string()
    assert report.verdict == verdict
    for c in report.checks:                   # every check says what it measured and why it matters
        assert c.value and c.why, c
        assert (c.fix != "") == (c.status in (W, F)) or c.status == S, c
    assert not (home / "state.json").exists()            # a snapshot never becomes this machine's state


def test_every_recorded_host_names_its_sources_and_holds_no_serial():
    dirs = sorted(d for d in SNAPS.iterdir() if d.is_dir())
    assert {d.name for d in dirs} == {s for s, _ in VERDICTS}
    for d in dirs:
        assert (d / "SNAPSHOT").read_text().startswith(f"format: {snapshot.FORMAT}\n"), d
        assert "spark.md" in (d / "PROVENANCE.md").read_text(), d
        for f in d.rglob("*"):
            text = snapshot.read_contained(f, d.resolve()) if f.name != "PROVENANCE.md" else None
            for line in (text or "").splitlines():
                if "serial" in line.lower():
                    assert snapshot.REDACTED in line, (f, line)


def test_what_an_owner_knows_about_each_box(home):
    def run(name, **kw):
        return host.run(host=str(SNAPS / name), **kw)[0]

    fe = run("dgx-spark-fe-7.3.1")
    assert "NVIDIA DGX Spark (Founders Edition)" in check(fe, "platform").value
    assert "nvidia-smi memory: Not Supported" in check(fe, "platform").value
    assert "MemTotal 119.7 GiB" in check(fe, "usable memory").value          # not 128
    assert check(fe, "DGX OS").value.startswith("DGX OS 7.3.1 (factory 7.2.3, 1 update) · Ubuntu 24.04.3 LTS")
    gx10 = run("asus-gx10-dgxos-7.6.0")
    assert "ASUS Ascent GX10" in check(gx10, "platform").value and "MemTotal 121.6 GiB" in check(gx10, "usable memory").value
    assert check(gx10, "DGX OS").value.startswith("DGX OS 7.6.0 (factory 7.2.3, 4 updates)")   # the *last* OTA
    assert "drop_caches" in check(gx10, "usable memory").fix
    assert "Embedded Controller 0x02000005" in check(gx10, "firmware").value
    hp = run("hp-zgx-nano-dgxos-7.5.0")                                       # unquoted release file
    assert "HP ZGX Nano G1n" in check(hp, "platform").value and check(hp, "DGX OS").value.startswith("DGX OS 7.5.0")
    assert "usable memory unknown" in hp.headline and "could not check: CUDA toolkit on PATH" in hp.headline
    drv = check(run("gb10-driver-595"), "GPU driver")
    assert "595.71.05" in drv.value and "nvidia-driver-580-open" in drv.fix
    cuda = check(run("spark-cuda-not-on-path"), "CUDA toolkit on PATH")
    assert cuda.fix == "export PATH=/usr/local/cuda/bin:$PATH" and "13.0" in cuda.value
    h100 = run("nvidia-h100-not-gb10", engine="sglang")                 # a discrete GPU: its own memory counts
    assert "not a GB10" in check(h100, "platform").value and check(h100, "GPU driver").value == "580.159.04 (CUDA 13.0)"
    assert check(h100, "usable memory").value.startswith("79.6 GiB free of NVIDIA H100 80GB HBM3's 79.6 GiB")
    x86 = run("x86-debian12-no-gpu")
    assert x86.target == "embedded" and x86.headline.startswith("snapshot x86-debian12-no-gpu: not a GB10 box")
    assert "not DGX OS" in check(x86, "DGX OS").value
    assert "embedded default" in check(x86, "platform").value
    # a catalogue model with llama.cpp on a box without a GPU: said as it is, not as the embedded default
    cpu120 = host.run(model="gpt-oss-120b", host=str(SNAPS / "x86-debian12-no-gpu"))[0]
    assert check(cpu120, "platform").status == W and "gpt-oss-120b on the CPU" in check(cpu120, "platform").value
    assert "embedded" not in check(cpu120, "platform").value + check(cpu120, "CUDA toolkit on PATH").value
    # a GPU that is not a GB10 still needs nvcc for 04's CUDA build; sm_121's minimum release does not apply
    h100_cuda = check(run("nvidia-h100-not-gb10", engine="llamacpp"), "CUDA toolkit on PATH")
    assert (h100_cuda.status, h100_cuda.value) == (P, "nvcc 13.0 on PATH")


def test_engine_and_model_decide_disk_and_swap(home):
    sgl = host.run(engine="sglang", host=str(SNAPS / "asus-gx10-dgxos-7.6.0"))[0]
    # 32 GiB of swap, which file unknown (no /proc/swaps): add the 33 GiB short, under a name no box uses
    assert check(sgl, "swap").fix.startswith("sudo fallocate -l 33G /swapfile-sparkkit")
    assert check(sgl, "page cache").fix == host.DROP_CACHES
    assert host.run(engine="sglang", model="gpt-oss-20b", host=str(SNAPS / "asus-gx10-dgxos-7.6.0"))[0] \
        .statuses()["swap"] == P                                        # 64 GiB is for the 120B only
    gguf, st, olla = (host.need_for("gpt-oss-120b", e) for e in ("llamacpp", "sglang", "ollama"))
    assert (gguf.weights_bytes, st.weights_bytes, olla.weights_bytes) == (int(59.02 * GIB), 65 * 10**9, 65 * 10**9)
    # SGLang/vLLM: the safetensors 03 places (engines' weights_home), a folder per Hub repo; Ollama its store
    assert st.weights_dir.endswith("/models/openai--gpt-oss-120b")
    assert olla.weights_dir == "/usr/share/ollama/.ollama/models"
    x86 = host.run(engine="sglang", host=str(SNAPS / "x86-debian12-no-gpu"))[0]
    assert "free at ~/.sparkkit/models/openai--gpt-oss-120b; need 61.5 GiB" in check(x86, "disk").value


# ----------------------------------------------------------------------------- one-line variations, labelled
def variant(tmp_path, name, files=(), commands=()):
    """A copy of recorded snapshot `name` with the given files/commands replaced (None: removed)."""
    d = Path(tempfile.mkdtemp(dir=tmp_path)) / f"{name}-variant"
    shutil.copytree(SNAPS / name, d)
    for path, text in dict(files).items():
        (d / "files" / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (d / "files" / path.lstrip("/")).write_text(text)
    for i, (line, text) in enumerate(dict(commands).items()):
        (d / "commands" / f"variant-{i}.txt").write_text(f"$ {line}\n{text}")
    return str(d)


def test_variations_of_the_recorded_gx10(tmp_path):
    gx10 = "asus-gx10-dgxos-7.6.0"
    # its swap file as /proc/swaps names it: SGLang's fix grows that file in place
    d = variant(tmp_path, gx10, {"/proc/swaps": "Filename\tType\tSize\tUsed\tPriority\n/swap.img file 33554428 0 -2\n"})
    swap = check(host.run(engine="sglang", host=d)[0], "swap")
    assert swap.fix.startswith("sudo swapoff /swap.img && sudo fallocate -l 64G /swap.img") and "/swap.img" in swap.value
    # fwupd: an update pending, then nothing to do (exit 2)
    d = variant(tmp_path, gx10, commands={"fwupdmgr get-updates --json": json.dumps(
        {"Devices": [{"Name": "Embedded Controller", "Releases": [{"Version": "0x02000006"}]}]})})
    fw = check(host.run(host=d)[0], "firmware")
    assert fw.status == W and fw.fix == "sudo fwupdmgr refresh && sudo fwupdmgr upgrade"
    d = variant(tmp_path, gx10, commands={"fwupdmgr get-updates --json": "# exit 2\nNo updates available\n"})
    assert check(host.run(host=d)[0], "firmware").status == P
    # the factory image, never updated; and the kernel NVIDIA named
    release = (SNAPS / gx10 / "files/etc/dgx-release").read_text().split("\nDGX_OTA_VERSION")[0] + "\n"
    d = variant(tmp_path, gx10, {"/etc/dgx-release": release})
    assert check(host.run(host=d)[0], "DGX OS").value.startswith("factory image 7.2.3, never updated")
    d = variant(tmp_path, gx10, commands={"uname -r": "7.0.0-1019-nvidia\n"})
    assert check(host.run(host=d)[0], "DGX OS").status == W


def test_qwen_chosen_on_a_recorded_gb10_gets_its_own_needs(tmp_path, home):
    qwen = "qwen3-coder-30b-a3b"                 # a Q8_0 GGUF of 30.25 GiB (model.CATALOGUE)
    # the recorded Founders Edition: 111.9 GiB usable — qwen fits, as gpt-oss-120b does
    fe, chosen = host.run(model=qwen, host=str(SNAPS / "dgx-spark-fe-7.3.1"))
    assert chosen == fe.model == qwen and fe.is_gb10
    assert check(fe, "usable memory").status == P and check(fe, "usable memory").value.endswith(
        f"{qwen} needs ≥ 32.2 GiB")                                       # 30.25 GiB + 2 GiB
    # the recorded GX10 with 9.7 GiB usable: too little now, though the box itself is big enough
    mem = check(host.run(model=qwen, host=str(SNAPS / "asus-gx10-dgxos-7.6.0"))[0], "usable memory")
    assert mem.status == F and f"{qwen} needs ≥ 32.2 GiB" in mem.value and "drop_caches" in mem.fix
    # variation, labelled: the FE record holds no df; add one line with 40 GiB free on /. Qwen's one
    # shard (30.25 GiB + 1 GiB) fits there, gpt-oss-120b's three (59.02 GiB + 1 GiB) do not
    d = variant(tmp_path, "dgx-spark-fe-7.3.1", commands={"df -P -k": (
        "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
        "/dev/nvme0n1p2 982326784 940383744 41943040 96% /\n")})
    disk = check(host.run(model=qwen, host=d)[0], "disk")
    assert disk.status == P and disk.value == "40.0 GiB free at ~/.sparkkit/models; need 31.2 GiB"
    assert check(host.run(model="gpt-oss-120b", host=d)[0], "disk").status == F
    # other engines: vLLM/SGLang the BF16 safetensors; Ollama's size is not in our sources, so the GGUF's stands in
    x86 = str(SNAPS / "x86-debian12-no-gpu")
    assert "free at ~/.sparkkit/models/Qwen--Qwen3-Coder-30B-A3B-Instruct; need 57.9 GiB" in \
        check(host.run(model=qwen, engine="vllm", host=x86)[0], "disk").value
    olla = host.need_for(qwen, "ollama")
    assert olla.weights_bytes == int(30.25 * GIB) and "Ollama's is not in our sources" in olla.says


@pytest.mark.parametrize("model", list(CATALOGUE))
def test_every_catalogue_model_is_a_choice_in_01(model, home):
    """No list in host.py: what the catalogue holds, 01 checks, with the catalogue's sizes."""
    report, chosen = host.run(model=model, host=str(SNAPS / "dgx-spark-fe-7.3.1"))
    assert chosen == report.model == model
    need = CATALOGUE[model].arch.weights_bytes + 2 * GIB
    assert check(report, "usable memory").value.endswith(f"{model} needs ≥ {need / GIB:.1f} GiB")
    assert host.need_for(model, "llamacpp").files == CATALOGUE[model].hf_files
    for engine in ("sglang", "vllm", "ollama"):
        assert host.need_for(model, engine).weights_bytes > 0


# ----------------------------------------------------------------------------- capture and redaction
FAKE = {"serial": "FAKESN-0123456789", "hp_serial": "FAKESN-HP-555", "ec": "FAKE-EC-SERIAL-77",
        "smi": "FAKE-1652922001234", "token": "hf_FakeTokenValue0123456789abcdefXYZ", "dmi": "FAKE-DMI-SERIAL-9"}


class RawBox(host.HostSource):
    """What a box's files and commands would print, fake serials and a fake token included."""

    label = "raw box"

    def __init__(self, unquoted=False):
        q = "" if unquoted else '"'
        self.asked = []
        self.files = {
            "/etc/dgx-release": f"DGX_NAME={q}DGX Spark{q}\nDGX_SWBUILD_VERSION={q}7.2.3{q}\nDGX_PLATFORM={q}GX10{q}\n"
                                f"DGX_SERIAL_NUMBER={q}{FAKE['hp_serial' if unquoted else 'serial']}{q}\n"
                                f"DGX_OTA_VERSION={q}7.6.0{q}\n",
            "/proc/meminfo": (SNAPS / "asus-gx10-dgxos-7.6.0/files/proc/meminfo").read_text(),
            "/sys/class/dmi/id/product_serial": FAKE["dmi"],
        }
        self.commands = {
            "nvidia-smi --query-gpu=name,driver_version --format=csv,noheader": "NVIDIA GB10, 580.178.04\n",
            "fwupdmgr get-devices --json": json.dumps({"Devices": [{"Name": "Embedded Controller",
                                                                    "Version": "0x02000005", "Serial": FAKE["ec"]}]}),
            "nvidia-smi": f"    Serial Number                         : {FAKE['smi']}\n"
                          "    GPU UUID                              : GPU-0f01c2c2-0000-4000-8000-0000000f0100\n",
            "uname -m": f"aarch64\nHF_TOKEN={FAKE['token']}\n",
        }

    def read(self, path):
        self.asked.append(path)
        return self.files.get(path)

    def run_full(self, *argv, timeout=10.0):
        out = self.commands.get(" ".join(argv))
        return (0, out) if out is not None else (None, "")

    def hf_token(self):
        return True


@pytest.mark.parametrize("unquoted", [False, True], ids=["quoted", "unquoted"])
def test_capture_redacts_serials_and_tokens_before_writing(tmp_path, unquoted):
    box = RawBox(unquoted)
    cap = snapshot.capture(tmp_path / "snap", box)
    written = b"".join(p.read_bytes() for p in (tmp_path / "snap").rglob("*") if p.is_file()).decode()
    for secret in FAKE.values():
        assert secret not in written, secret
    assert "0f01c2c2" not in written and cap.redactions >= 5
    assert not [p for p in box.asked if "serial" in p]                       # never even opened
    assert "hf_token: present" in (tmp_path / "snap/SNAPSHOT").read_text()
    report, _ = host.run(host=str(tmp_path / "snap"))                        # still a GX10 on 7.6.0
    assert check(report, "DGX OS").value.startswith("DGX OS 7.6.0") and "GX10" in check(report, "platform").value
    assert check(report, "HF token").value == "present"


def test_redact_keeps_everything_else():
    text = 'DGX_OTA_VERSION="7.6.0"\nDGX_SERIAL_NUMBER="X1"\nMemTotal:       127535084 kB\n'
    assert snapshot.redact(text) == ('DGX_OTA_VERSION="7.6.0"\nDGX_SERIAL_NUMBER="<redacted>"\n'
                                     "MemTotal:       127535084 kB\n", 1)


def test_capturing_this_machine_round_trips(tmp_path):
    cap = snapshot.capture(tmp_path / "snap")
    assert "/proc/meminfo" in cap.files
    live = host.run()[0]
    recorded = host.run(host=str(tmp_path / "snap"))[0]
    assert recorded.statuses() == live.statuses(), (recorded.table().to_string(), live.table().to_string())
    assert recorded.source == "snapshot snap" and live.source == "this machine"


def test_sparkkit_snapshot_command(tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "sparkkit", "snapshot", *args], capture_output=True, text=True,
                              timeout=60, env={**os.environ, "SPARKKIT_HOME": str(tmp_path / "home")})
    out = cli(str(tmp_path / "snap"))
    assert out.returncode == 0 and "host snapshot at" in out.stdout and (tmp_path / "snap/SNAPSHOT").is_file()
    out = cli(str(tmp_path / "snap"))                                       # not empty any more
    assert out.returncode == 2 and "parameter `DIR`" in out.stderr and "new or empty directory" in out.stderr


# ----------------------------------------------------------------------------- bad input, odd output
@pytest.mark.parametrize("make,why", [
    (lambda d: d / "missing", "does not exist"),
    (lambda d: (d / "file").write_text("x") and d / "file", "is not a directory"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "has no SNAPSHOT file"),
    (lambda d: ((d / "old").mkdir(), (d / "old/SNAPSHOT").write_text("format: sparkkit.snapshot/0\n"))
     and d / "old", "'sparkkit.snapshot/0'"),
])
def test_a_host_that_is_not_a_snapshot_names_the_parameter(tmp_path, make, why):
    with pytest.raises(ParameterError, match=r"parameter `host`.*accepted: a host snapshot directory") as e:
        host.run(host=str(make(tmp_path)))
    assert why in str(e.value)


def test_unknown_engine_and_model_name_the_parameter(tmp_path):
    with pytest.raises(ParameterError, match="parameter `engine`.*accepted: llamacpp, ollama, sglang, vllm"):
        host.run(engine="tgi")
    with pytest.raises(ParameterError, match="parameter `model`.*gpt-oss-120b") as e:
        host.run(model="llama-70b")
    assert e.value.parameter == "model" and e.value.value == "llama-70b"
    assert e.value.accepted == ", ".join(["auto", "embedded", "embedded-qwen3-coder", *CATALOGUE])   # every model, qwen too
    assert "qwen3-coder-30b-a3b" in str(e.value)
    with pytest.raises(ParameterError, match="parameter `model`"):             # also against a snapshot
        host.run(model="qwen3-coder-30b", host=str(SNAPS / "dgx-spark-fe-7.3.1"))
    with pytest.raises(ParameterError, match="parameter `model`.*qwen3-coder-30b-a3b with engine sglang "
                                             r"\(the embedded model is served by llamacpp only"):
        host.run(model="embedded", engine="sglang")
    with pytest.raises(ParameterError, match="parameter `engine`.*llamacpp \\| ollama \\| sglang \\| vllm"):
        check_engine("tensorrt")
    (tmp_path / "full").mkdir()
    (tmp_path / "full/x").write_text("x")
    with pytest.raises(ParameterError, match="parameter `capture_to`.*new or empty"):
        snapshot.capture(tmp_path / "full")


def test_odd_output_never_crashes(tmp_path):
    d = tmp_path / "odd"
    (d / "commands").mkdir(parents=True)
    (d / "files/etc").mkdir(parents=True)
    (d / "files/proc").mkdir(parents=True)
    (d / "SNAPSHOT").write_text(f"format: {snapshot.FORMAT}\nhome: /home/<user>\n")
    (d / "files/etc/dgx-release").write_bytes(b"\x00\xff\xfe garbage\nnot a key line\n")
    (d / "files/proc/meminfo").write_text("MemTotal: lots\nMemAvailable: kB\n\n:::\n")
    (d / "files/proc/swaps").write_text("Filename\n")
    (d / "commands/a.txt").write_text("nvidia-smi printed this without a header\n")
    (d / "commands/b.txt").write_text("$ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader\n"
                                      "No devices were found\n")
    (d / "commands/c.txt").write_text("$ fwupdmgr get-devices --json\nWARNING: not json\n")
    (d / "commands/d.txt").write_text("$ df -P -k\nFilesystem 1024-blocks Used Available Capacity Mounted on\n"
                                      "/dev/x 10 5 notanumber 50% /\n")
    (d / "commands/e.txt").write_text('$ unbalanced "quote\n')
    report, _ = host.run(host=str(d))
    st = report.statuses()
    assert st["platform"] == F and "lists no GPU" in check(report, "platform").value   # DGX OS box without a GPU
    assert st["DGX OS"] == W and "no DGX_* release keys" in check(report, "DGX OS").value
    assert st["usable memory"] == st["swap"] == st["disk"] == S
    assert "commands/a.txt" in report.headline and "commands/e.txt" in report.headline
    src = snapshot.load(d)
    assert src.read("/../../../etc/passwd") is None and src.read("~/.bashrc") is None


def test_the_live_source_is_total(tmp_path):
    src = host.HostSource()
    assert src.read(str(tmp_path)) is None                                # a directory: unreadable as a file
    assert src.run("no-such-command-anywhere") is None
    assert src.run("sleep", "30", timeout=0.5) is None          # killed at its timeout (else: "" after 30 s)
    assert src.run("sh", "-c", "echo out; exit 3") is None and src.run_full("sh", "-c", "exit 3") == (3, "")


def test_shards_already_there_are_not_needed_twice(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    with open(models / "gpt-oss-120b-mxfp4-00001-of-00003.gguf", "wb") as f:
        f.truncate(20 * GIB)                                                # sparse: takes no disk
    d = check(host.preflight("gpt-oss-120b", "llamacpp", str(models)), "disk")
    assert "(20.0 GiB already there)" in d.value and "need 40.0 GiB" in d.value


# ----------------------------------------------------------------------------- this machine, and 01 itself
def test_live_host_never_prints_the_token(monkeypatch, home):
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue")
    report, chosen = host.run()
    assert chosen == "embedded" and report.target == "embedded"   # this CI machine has no GPU
    assert "could not check: platform, GPU driver" in report.headline
    assert "hf_supersecretvalue" not in report.table().to_string()
    state = json.loads((home / "state.json").read_text())
    assert "hf_supersecretvalue" not in json.dumps(state)
    assert state["host"]["source"] == "this machine" and state["choice"]["engine"] == "llamacpp"


def test_qwen_chosen_in_01_is_what_02_plans_and_03_places(tmp_path, home):
    import sys
    sys.path.insert(0, str(ROOT / "tests"))
    from hubserver import HubServer

    from sparkkit import download, plan, records
    qwen = "qwen3-coder-30b-a3b"
    _, chosen = host.run(model=qwen)                                    # this machine: the choice is recorded
    assert chosen == qwen and records.load_state()["choice"]["model"] == qwen
    view = plan.run(context=8192)                                       # 02 plans 01's choice and adopts it
    assert view.setting.model == qwen and view.setting.adoptable and view.plan.arch.arch == "qwen3moe"
    repo = tmp_path / "hub" / CATALOGUE[qwen].hf_repo                   # 03's real code against a local Hub
    repo.mkdir(parents=True)
    (repo / CATALOGUE[qwen].hf_files[0]).write_bytes(b"GGUF" + bytes(4096))
    with HubServer(tmp_path / "hub") as hub:
        placed = download.run(hf_endpoint=hub.endpoint, scan_roots={})
        asked = sorted(hub.sent)
    assert asked == [CATALOGUE[qwen].hf_files[0]]
    state = records.load_state()
    assert state["model"]["model"] == state["model"]["alias"] == qwen == placed.model
    assert state["plan"]["for_model"] == qwen                           # 05 serves with this plan, not a re-plan


def test_01_runs_against_a_snapshot_from_the_command_line(tmp_path, home):
    out = tmp_path / "01.ipynb"
    pm.execute_notebook(str(ROOT / "runbooks/01-preflight.ipynb"), str(out), kernel_name="python3",
                        parameters={"host": str(SNAPS / "hp-zgx-nano-dgxos-7.5.0"), "engine": "ollama",
                                    "run_dir": str(tmp_path / "run")}, progress_bar=False)
    record = json.loads((tmp_path / "run/01-preflight.json").read_text())
    assert record["verdict"] == P and record["results"]["source"] == "snapshot hp-zgx-nano-dgxos-7.5.0"
    assert record["results"]["engine"] == "ollama" and record["results"]["box"] == "HP ZGX Nano G1n"
    assert "host" not in json.loads((home / "state.json").read_text())     # later runbooks still see this machine


def test_disk_counts_what_03_already_holds_finished_or_partial(tmp_path, monkeypatch, home):
    """Found at full scale: after a download was cut at 6 GiB, 01 asked for the whole 60 GiB again and
    failed a disk that could hold the rest (records/fullscale/NOTES.md)."""
    from sparkkit.download import partial_path
    files = CATALOGUE["gpt-oss-120b"].hf_files
    target = tmp_path / "models" / "gpt-oss-120b"
    target.mkdir(parents=True)
    with open(target / files[0], "wb") as f:            # a finished shard (sparse: only its size matters)
        f.truncate(20 * GIB)
    part = partial_path(target, files[1])
    part.parent.mkdir(parents=True)
    with open(part, "wb") as f:                         # and 6 GiB of the next one, which 03 resumes
        f.truncate(6 * GIB)
    monkeypatch.setattr(host.HostSource, "disk_free", lambda self, path: 35 * GIB)
    report = host.preflight("gpt-oss-120b", "llamacpp", str(tmp_path / "models"))
    disk = check(report, "disk")
    assert disk.status == P and "(26.0 GiB already there)" in disk.value, disk
    monkeypatch.setattr(host.HostSource, "disk_free", lambda self, path: 30 * GIB)
    assert check(host.preflight("gpt-oss-120b", "llamacpp", str(tmp_path / "models")), "disk").status == F


def test_01_shows_whole_fixes_failing_checks_first_and_names_them(tmp_path, monkeypatch, home):
    """The fix commands are what 01 exists to show: never cut at pandas' 50 characters."""
    monkeypatch.setattr(host.HostSource, "disk_free", lambda self, path: 1 * GIB)
    report = host.preflight("gpt-oss-120b", "llamacpp", str(tmp_path / "models"))
    assert report.verdict == F and report.headline.startswith("failed: ") and "disk" in report.headline.split(" — ")[0]
    table = report.table()
    assert list(table["status"])[0] == F and list(table["status"]) == sorted(
        table["status"], key=lambda s: {"fail": 0, "warn": 1, "pass": 2, "skip": 3}[s])
    disk = next(c for c in report.checks if c.name == "disk")
    import html
    assert len(disk.fix) > 50 and disk.fix in repr(table) and html.escape(disk.fix) in table._repr_html_()
    assert "…" not in repr(table) and "..." not in repr(table)
    assert disk.value in repr(table.head(3))                            # still whole after slicing


# ----------------------------------------------------------------------------- malformed snapshots
def _opened_outside(monkeypatch, snap):
    """Record every file opened for reading outside the snapshot while 01 runs on it."""
    import builtins
    real_open, seen = builtins.open, []

    def watching(file, mode="r", *a, **k):
        p = str(file)
        if "r" in mode and p.startswith(("/etc", "/proc", "/sys", "/root/.")) and not p.startswith(str(snap)):
            seen.append(p)
        return real_open(file, mode, *a, **k)
    monkeypatch.setattr(builtins, "open", watching)
    return seen


def test_snapshot_files_in_odd_encodings_are_read(tmp_path):
    gx10 = "asus-gx10-dgxos-7.6.0"
    plain = host.run(host=str(SNAPS / gx10))[0]
    meminfo = (SNAPS / gx10 / "files" / "proc" / "meminfo").read_text()
    for name, data in (("bom-crlf", b"\xef\xbb\xbf" + meminfo.replace("\n", "\r\n").encode()),
                       ("utf16", meminfo.encode("utf-16"))):
        d = Path(variant(tmp_path, gx10))
        (d / "files" / "proc" / "meminfo").write_bytes(data)
        report = host.run(host=str(d))[0]
        assert check(report, "usable memory").value == check(plain, "usable memory").value, name


def test_snapshot_digits_that_are_not_ascii_do_not_crash_01(tmp_path):
    gx10 = "asus-gx10-dgxos-7.6.0"
    d = variant(tmp_path, gx10, {"/proc/meminfo": "MemTotal:       ²²² kB\nMemAvailable:   ١٢٣ kB\nSwapFree: 0 kB\n"},
                {"df -P -k": "Filesystem 1024-blocks Used Available Capacity Mounted on\n/dev/x 10 5 ²5 50% /\n"})
    report = host.run(host=d)[0]
    assert report.statuses()["disk"] == "skip" and report.statuses()["usable memory"] in ("skip", F, W)


def test_links_anywhere_in_a_snapshot_never_lead_out_of_it(tmp_path, monkeypatch):
    import os
    gx10 = "asus-gx10-dgxos-7.6.0"
    d = Path(variant(tmp_path, gx10))
    (d / "files" / "etc" / "os-release").unlink(missing_ok=True)
    (d / "files" / "etc").mkdir(parents=True, exist_ok=True)
    (d / "files" / "etc" / "os-release").symlink_to("/etc/os-release")              # a file linked out
    (d / "files" / "proc" / "swaps").unlink(missing_ok=True)
    (d / "files" / "proc" / "swaps").symlink_to(d / "nowhere")                      # a link to nothing
    os.mkfifo(d / "files" / "proc" / "cmdline")                                      # a special file
    outside = tmp_path / "outside-commands"
    outside.mkdir()
    (outside / "x.txt").write_text("$ nvidia-smi\nNVIDIA-SMI 999.99\n")
    (d / "commands" / "99-linked.txt").symlink_to(outside / "x.txt")                 # a command linked out
    seen = _opened_outside(monkeypatch, d)
    src = snapshot.load(d)
    assert src.read("/etc/os-release") is None and src.read("/proc/swaps") is None
    assert src.read("/proc/cmdline") is None                                         # never blocks on a FIFO
    assert "commands/99-linked.txt: not a regular file inside the snapshot; ignored" in src.problems
    report = host.run(host=str(d))[0]
    assert seen == [] and report.verdict in (P, W, F)
    # files/ itself linked out of the snapshot: nothing is read through it
    e = Path(variant(tmp_path, gx10))
    import shutil
    shutil.rmtree(e / "files")
    (e / "files").symlink_to("/")
    src = snapshot.load(e)
    assert src.read("/etc/os-release") is None and src.read("/proc/meminfo") is None
    assert seen == []


def test_the_same_box_in_odd_bytes_reads_the_same(home):
    plain = host.run(host=str(SNAPS / "asus-gx10-dgxos-7.6.0"))[0]
    odd = host.run(host=str(SNAPS / "gx10-odd-encodings"))[0]
    assert [(c.name, c.status, c.value) for c in odd.checks] == [(c.name, c.status, c.value) for c in plain.checks]


def test_a_gb10_whose_gpu_does_not_answer_is_diagnosed_as_that(tmp_path, home):
    """Not 'a CPU machine, embedded default': the box is a GB10 with a driver that does not reach its GPU."""
    failed = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the " \
             "latest NVIDIA driver is installed and running.\n"
    for name in ("dgx-spark-fe-7.3.1", "asus-gx10-dgxos-7.6.0"):
        d = variant(tmp_path, name, commands={"nvidia-smi --query-gpu=name,driver_version --format=csv,noheader":
                                              "# exit 9\n" + failed, "nvidia-smi": "# exit 9\n" + failed})
        for f in Path(d, "commands").glob("*"):
            if "nvidia-smi" in f.read_text().splitlines()[0] and not f.name.startswith("variant-"):
                f.unlink()
        report, chosen = host.run(host=d)
        platform = check(report, "platform")
        assert report.target == "gb10" and chosen == "gpt-oss-120b", (name, report.target, chosen)
        assert platform.status == F and "nvidia-smi lists no GPU" in platform.value and "sudo reboot" in platform.fix
        assert report.headline.startswith("failed: platform")


@pytest.mark.parametrize("swaps, starts, fstab", [
    ("", "sudo fallocate -l 33G /swapfile-sparkkit ", "/swapfile-sparkkit"),                  # unknown which
    ("Filename\tType\tSize\tUsed\tPriority\n/swap.img file 33554428 0 -2\n",
     "sudo swapoff /swap.img && sudo fallocate -l 64G /swap.img ", "/swap.img"),               # grow the one file
    ("Filename\tType\tSize\tUsed\tPriority\n/swapfile file 16777212 0 -2\n/swap.img file 16777212 0 -3\n",
     "sudo fallocate -l 33G /swapfile2 ", "/swapfile2"),                                      # several: add one
    ("Filename\tType\tSize\tUsed\tPriority\n/dev/nvme0n1p3 partition 33554428 0 -2\n",
     "sudo fallocate -l 33G /swapfile ", "/swapfile"),                                        # a partition
])
def test_the_swap_fix_fits_the_swap_the_box_has(tmp_path, home, swaps, starts, fstab):
    d = variant(tmp_path, "asus-gx10-dgxos-7.6.0", {"/proc/swaps": swaps} if swaps else {})
    fix = check(host.run(engine="sglang", host=d)[0], "swap").fix
    assert fix.startswith(starts), fix
    assert "swapoff" not in fix or fix.startswith("sudo swapoff /swap.img")   # never pulls a swap it does not replace
    # the fstab line is added only where it is missing: running the fix twice leaves one line
    assert f"(grep -qs '^{fstab}[[:space:]]' /etc/fstab || echo '{fstab} none swap sw 0 0' | sudo tee -a /etc/fstab)" \
        in fix
