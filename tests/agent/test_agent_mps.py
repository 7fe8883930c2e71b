"""`--mps-daemon`: starting, supervising and stopping the MPS control daemon, with a stand-in program.

The stand-in behaves like `nvidia-cuda-mps-control` as far as the agent uses
it: `-d` leaves a daemon running (a `sleep` whose pid is kept in the pipe
directory) and returns; without `-d` it reads one command from stdin and fails
when no daemon runs; `quit` ends the daemon.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from tessellate.agent.agent import Agent, AgentConfig
from tessellate.agent.fake import FakeBackend
from tessellate.agent.mps import MpsDaemon, MpsError

from tessellate.agent_cli import main

FAKE_CONTROL = """#!/bin/sh
dir="$CUDA_MPS_PIPE_DIRECTORY"
pidfile="$dir/daemon.pid"
# running, and not a zombie nobody reaped yet
alive() {
  [ -f "$pidfile" ] && s=$(awk '{print $3}' "/proc/$(cat "$pidfile")/stat" 2>/dev/null) && [ "$s" != Z ]
}
if [ "$1" = "-d" ]; then
  [ -d "$CUDA_MPS_LOG_DIRECTORY" ] || exit 3
  alive && { echo "An instance of this daemon is already running" >&2; exit 1; }
  sleep 100000 </dev/null >/dev/null 2>&1 &
  echo $! > "$pidfile"
  echo "started" >> "$CUDA_MPS_LOG_DIRECTORY/control.log"
  exit 0
fi
read cmd
echo "$cmd" >> "$dir/commands"
alive || { echo "Cannot find MPS control daemon process" >&2; exit 1; }
case "$cmd" in
  get_server_list) exit 0 ;;
  quit) kill "$(cat "$pidfile")"; rm -f "$pidfile"; exit 0 ;;
  *) exit 2 ;;
esac
"""


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "bin" / "nvidia-cuda-mps-control"
    path.parent.mkdir()
    path.write_text(FAKE_CONTROL)
    path.chmod(0o755)
    return path


@pytest.fixture
def daemon(tmp_path: Path, program: Path) -> Iterator[MpsDaemon]:
    d = MpsDaemon(str(program), tmp_path / "pipe", tmp_path / "log", check_seconds=0.05)
    yield d
    pid = _pid(d)  # whatever the test left running: end it (it is ours)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)


def _pid(d: MpsDaemon) -> int | None:
    path = d.pipe_dir / "daemon.pid"
    return int(path.read_text()) if path.exists() else None


def _commands(d: MpsDaemon) -> list[str]:
    path = d.pipe_dir / "commands"
    return path.read_text().split() if path.exists() else []


def test_starts_the_daemon_with_its_directories_and_quits_it_on_stop(daemon: MpsDaemon) -> None:
    daemon.start()
    assert daemon.alive() and daemon.starts == 1
    assert (daemon.log_dir / "control.log").read_text() == "started\n"
    daemon.stop()
    assert not daemon.alive()
    assert _commands(daemon)[-2:] == ["quit", "get_server_list"]


def test_a_daemon_that_died_is_started_again(daemon: MpsDaemon) -> None:
    daemon.start()
    first = _pid(daemon)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    daemon.check()
    assert daemon.alive() and daemon.starts == 2 and _pid(daemon) != first


def test_a_running_daemon_is_adopted_not_started_twice(
    daemon: MpsDaemon, tmp_path: Path, program: Path
) -> None:
    daemon.start()
    again = MpsDaemon(str(program), daemon.pipe_dir, daemon.log_dir)
    again.start()
    assert again.starts == 0 and (daemon.log_dir / "control.log").read_text() == "started\n"


def test_a_missing_program_fails_start_saying_what_to_install(tmp_path: Path) -> None:
    daemon = MpsDaemon("/nonexistent/nvidia-cuda-mps-control", tmp_path / "p", tmp_path / "l")
    with pytest.raises(MpsError, match="was not found or is not executable: it ships with the NVIDIA driver"):
        daemon.start()
    assert not (tmp_path / "p").exists()


@pytest.mark.parametrize("quit_on_exit", [False, True])
def test_the_agent_runs_the_daemon_and_leaves_it_running_unless_told(
    tmp_path: Path, daemon: MpsDaemon, quit_on_exit: bool
) -> None:
    daemon.quit_on_exit = quit_on_exit
    doc = {"model": "NVIDIA A100-SXM4-80GB", "memory_mib": 81920, "gpus": 1}
    config = AgentConfig(node_name="n", device_plugin_dir=tmp_path / "dp", mps=daemon)
    agent = Agent(config, FakeBackend(doc), api=None, pods=_NoPods())
    agent.start()
    try:
        assert daemon.alive()
    finally:
        agent.stop()
    assert daemon.alive() != quit_on_exit  # running fractional pods keep their MPS server
    assert ("quit" in _commands(daemon)) == quit_on_exit


def test_mps_daemon_needs_a_pipe_dir(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--node-name", "n", "--mps-daemon"]) == 2
    assert "--mps-daemon needs --mps-pipe-dir" in capsys.readouterr().err


class _NoPods:
    def pods(self) -> list:
        return []

    def record(self, claim: object) -> None:
        pass
