"""The Claude Code turn every real-engine test asks for: the pinned CLI, in sparkkit's sandbox home (whose
settings the test wrote), reads sparkkit's probe file with the Read tool and answers."""
from pathlib import Path

from sparkkit import claude, records


def read_turn(reply: str, probe: Path | None = None) -> claude.CliRun:
    """Run the turn; assert one Read of `probe`, its result, and `reply` after two turns. Returns the run."""
    probe = probe or records.probe_file()
    cli = claude.ensure_cli()
    assert claude.cli_version(cli) == claude.PINNED_CLI
    run = claude.ask(cli, f"Use the Read tool to read {probe} and tell me what it says.", claude.sandbox_home(),
                     probe.parent)
    assert run.exit_code == 0, run.stderr_tail
    assert run.tool_uses == [{"name": "Read", "input": {"file_path": str(probe)}}]
    assert len(run.tool_results) == 1 and not run.tool_results[0]["is_error"]
    assert records.PROBE_TEXT.strip() in run.tool_results[0]["content"]
    assert run.result == reply and run.turns == 2
    return run
