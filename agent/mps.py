"""Running the CUDA MPS control daemon that enforces fractions' limits (`--mps-daemon`).

The MPS limits the agent hands fractional containers
(`CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`, `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`) are
applied by an MPS server, which the control daemon starts for the first client.
Without a daemon on the node CUDA ignores them. So with `--mps-daemon` the
agent starts `nvidia-cuda-mps-control -d` with `CUDA_MPS_PIPE_DIRECTORY` (the
directory it also mounts into fractional containers) and
`CUDA_MPS_LOG_DIRECTORY`, checks every few seconds that it still answers, and
starts it again if not. When the agent stops the daemon is left running, because
`quit` also ends the MPS servers of running fractional pods (a DaemonSet rollout
would interrupt them); the next agent adopts it. `--mps-quit-on-exit` quits it.

"Answers" means the documented control interface works: `get_server_list`
written to the control program's stdin exits 0 (it fails when no daemon runs
for that pipe directory). A daemon already running for the pipe directory when
the agent starts (an agent restart) is adopted, not started twice.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

log = logging.getLogger("tessellate.agent.mps")

CHECK_SECONDS = 5.0
COMMAND_TIMEOUT = 10.0
START_CHECKS = 50
"""How many times (0.1 s apart) a freshly started daemon is asked before giving up."""


class MpsError(RuntimeError):
    """The MPS control daemon cannot be started; the message says what to install or fix."""


class MpsDaemon:
    def __init__(
        self,
        binary: str,
        pipe_dir: Path,
        log_dir: Path,
        check_seconds: float = CHECK_SECONDS,
        quit_on_exit: bool = False,
    ):
        self.binary = binary
        self.quit_on_exit = quit_on_exit
        self.pipe_dir = Path(pipe_dir)
        self.log_dir = Path(log_dir)
        self.check_seconds = check_seconds
        self.starts = 0
        """How many times this process started the daemon (restarts included)."""
        self._path: str | None = None

    def _program(self) -> str:
        path = shutil.which(self.binary)
        if path is None:
            raise MpsError(
                f"the MPS control program {self.binary!r} was not found or is not executable: it ships "
                "with the NVIDIA driver's user-space tools (e.g. the nvidia-utils package); mount it "
                "from the host into the agent's container (hostPath), or give its path with "
                "--mps-control-binary"
            )
        return path

    def _env(self) -> dict[str, str]:
        return dict(
            os.environ,
            CUDA_MPS_PIPE_DIRECTORY=str(self.pipe_dir),
            CUDA_MPS_LOG_DIRECTORY=str(self.log_dir),
        )

    def _command(self, text: str) -> subprocess.CompletedProcess[str]:
        assert self._path is not None
        return subprocess.run(
            [self._path],
            input=text + "\n",
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def alive(self) -> bool:
        """Does a control daemon answer on our pipe directory?"""
        try:
            return self._command("get_server_list").returncode == 0
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("MPS control daemon did not answer: %s", exc)
            return False

    def start(self) -> None:
        """Start the daemon unless one already answers; raises MpsError."""
        self._path = self._program()
        try:
            self.pipe_dir.mkdir(parents=True, exist_ok=True)
            self.log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MpsError(f"cannot create the MPS directories: {exc}") from None
        if self.alive():
            log.info("MPS control daemon already runs for %s; using it", self.pipe_dir)
            return
        try:
            started = subprocess.run(
                [self._path, "-d"],
                env=self._env(),
                capture_output=True,
                text=True,
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MpsError(f"{self._path} -d failed: {exc}") from None
        if started.returncode != 0:
            detail = (started.stderr or started.stdout).strip() or f"exit status {started.returncode}"
            raise MpsError(f"{self._path} -d failed: {detail}")
        for _ in range(START_CHECKS):
            if self.alive():
                self.starts += 1
                log.info("MPS control daemon started (pipes %s, logs %s)", self.pipe_dir, self.log_dir)
                return
            time.sleep(0.1)
        raise MpsError(
            f"{self._path} -d exited 0 but no daemon answers on {self.pipe_dir}; "
            f"see {self.log_dir}/control.log"
        )

    def check(self) -> None:
        """One supervision round: start the daemon again if it stopped answering."""
        if self.alive():
            return
        log.warning("MPS control daemon is not running; starting it again")
        try:
            self.start()
        except MpsError as exc:
            log.error("%s", exc)

    def run(self, stopping: threading.Event) -> None:
        while not stopping.wait(self.check_seconds):
            self.check()

    def leave(self) -> None:
        """The agent is stopping: quit the daemon only when asked to (`quit_on_exit`)."""
        if self.quit_on_exit:
            self.stop()
        elif self._path is not None:
            log.info("leaving the MPS control daemon running for the fractional pods that use it")

    def stop(self) -> None:
        """Tell the daemon to quit (it stops its MPS servers too)."""
        if self._path is None:
            return
        try:
            result = self._command("quit")
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.warning("could not stop the MPS control daemon: %s", exc)
            return
        if result.returncode != 0:
            log.warning("MPS quit: %s", (result.stderr or result.stdout).strip())
