"""01's checks on recorded hosts (a small dict-backed source; full snapshots come with issue 3)."""
from sparkkit import host
from sparkkit.model import CATALOGUE

GIB = 2**30
# MemTotal 127,535,084 kB is what a DGX Spark reports (research/spark.md §2, doctor.py fixture);
# the other lines are the shape /proc/meminfo always has.
SPARK_MEMINFO = """MemTotal:       127535084 kB
MemFree:         9123456 kB
MemAvailable:  118000000 kB
SwapTotal:      16777212 kB
SwapFree:       16777212 kB
"""


class Recorded(host.HostSource):
    def __init__(self, files, commands, free_bytes, env=(), machine="aarch64"):
        self.files, self.commands, self.free, self.env, self.arch = files, commands, free_bytes, set(env), machine

    def read(self, path):
        return self.files.get(path)

    def run(self, *argv, timeout=10.0):
        return self.commands.get(argv[0])

    def machine(self):
        return self.arch

    def disk_free(self, path):
        return self.free

    def exists(self, path):
        return False

    def env_has(self, name):
        return name in self.env


def by_name(report):
    return {c.name: c for c in report.checks}


def test_spark_with_room_passes():
    src = Recorded({"/proc/meminfo": SPARK_MEMINFO}, {"nvidia-smi": "NVIDIA GB10\n", "nvcc": "Cuda compilation tools"},
                   free_bytes=900 * GIB, env={"HF_TOKEN"})
    r = host.preflight(CATALOGUE["gpt-oss-120b"].arch.weights_bytes, "/models", src)
    assert r.is_gb10 and r.target == "gb10" and r.verdict == "pass", r.table()
    assert abs(r.usable_bytes / GIB - (118000000 + 16777212) / 2**20 + 4) < 0.01
    assert by_name(r)["HF token"].value == "present"


def test_spark_without_cuda_on_path_and_full_disk():
    src = Recorded({"/proc/meminfo": SPARK_MEMINFO}, {"nvidia-smi": "NVIDIA GB10\n"}, free_bytes=20 * GIB)
    r = host.preflight(CATALOGUE["gpt-oss-120b"].arch.weights_bytes, "/models", src)
    checks = by_name(r)
    assert checks["CUDA toolkit on PATH"].status == "warn"
    assert checks["CUDA toolkit on PATH"].fix == "export PATH=/usr/local/cuda/bin:$PATH"
    assert checks["disk"].status == "fail" and r.verdict == "fail"
    assert checks["HF token"].status == "warn"


def test_page_cache_full_spark_fails_memory_with_the_drop_caches_fix():
    meminfo = SPARK_MEMINFO.replace("118000000", "40000000").replace("SwapFree:       16777212", "SwapFree:       0")
    src = Recorded({"/proc/meminfo": meminfo}, {"nvidia-smi": "NVIDIA GB10\n", "nvcc": "x"}, free_bytes=900 * GIB)
    mem = by_name(host.preflight(CATALOGUE["gpt-oss-120b"].arch.weights_bytes, "/m", src))["usable memory"]
    assert mem.status == "fail" and "drop_caches" in mem.fix


def test_plain_x86_without_gpu_is_the_embedded_default():
    src = Recorded({"/proc/meminfo": SPARK_MEMINFO}, {}, free_bytes=50 * GIB, machine="x86_64")
    r = host.preflight(300_000, "/tmp", src)
    assert not r.is_gb10 and r.target == "embedded"
    assert by_name(r)["platform"].status == "skip" and "not a GB10 box — embedded default" in r.headline
    assert "CUDA toolkit on PATH" not in by_name(r)


def test_unreadable_meminfo_and_disk_skip_instead_of_crashing():
    src = Recorded({}, {}, free_bytes=None)
    r = host.preflight(1, "/nowhere", src)
    assert by_name(r)["usable memory"].status == "skip" and by_name(r)["disk"].status == "skip"
    assert "could not check" in r.headline


def test_live_host_runs_and_never_prints_the_token(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path))
    monkeypatch.setenv("HF_TOKEN", "hf_supersecretvalue")
    report, chosen = host.run()
    assert chosen == "embedded" and report.target == "embedded"   # this CI machine has no GPU
    assert "hf_supersecretvalue" not in report.table().to_string()
    assert "hf_supersecretvalue" not in (tmp_path / "state.json").read_text()


def test_unknown_engine_and_model_name_the_parameter(monkeypatch, tmp_path):
    import pytest
    from sparkkit.errors import ParameterError
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path))
    with pytest.raises(ParameterError, match="parameter `engine`.*llamacpp"):
        host.run(engine="tgi")
    with pytest.raises(ParameterError, match="parameter `model`.*gpt-oss-120b"):
        host.run(model="llama-70b")
