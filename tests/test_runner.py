"""`sparkkit run`'s log level: what the terminal shows while real runbooks run under papermill (a kernel each)."""
import nbformat
import pytest

from sparkkit import runner
from sparkkit.errors import ParameterError


@pytest.fixture
def books(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARKKIT_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("SPARKKIT_LOG_LEVEL", raising=False)
    d = tmp_path / "runbooks"
    d.mkdir()
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('run_dir: str = ""  # where the records go')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell('print("a live line from the step")')]
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nbformat.write(nb, d / "01-alpha.ipynb")
    return d, tmp_path / "runs"


@pytest.mark.parametrize("level, live, papermill_log", [("info", True, False), ("quiet", False, False),
                                                        ("debug", True, True)])
def test_the_log_level_sets_what_the_terminal_shows(books, capfd, level, live, papermill_log):
    directory, runs = books
    runner.run_all(str(runs / level), keep_serving="no", directory=directory, log_level=level)
    out, err = capfd.readouterr()
    assert ("  01 │ a live line from the step" in out) is live
    assert ("papermill │ Executing" in err) is papermill_log
    assert "01-alpha" in out and "records:" in out                      # the summary, at every level


def test_the_environment_sets_the_default_and_a_bad_level_is_one_sentence(books, capfd, monkeypatch):
    directory, runs = books
    monkeypatch.setenv("SPARKKIT_LOG_LEVEL", "quiet")
    runner.run_all(str(runs / "env"), keep_serving="no", directory=directory)
    assert "a live line" not in capfd.readouterr().out
    with pytest.raises(ParameterError, match="parameter `log_level`: got 'loud'; accepted: quiet, info, debug"):
        runner.run_all(str(runs / "bad"), keep_serving="no", directory=directory, log_level="loud")
