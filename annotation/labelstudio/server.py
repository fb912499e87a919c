"""A local Label Studio server driven through the scripts in ``infra/labelstudio/``.

Used by the test fixtures, the benchmarks and ``dataengine services``. Everything is explicit
(port, folders, credentials): this module reads no environment variable. The credentials travel to
the scripts through the child's environment only, never on a command line or in a log.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_SCRIPTS_DIR",
    "LabelStudioServerError",
    "LocalServer",
    "free_port",
    "is_installed",
    "new_token",
]

# The repository's infra/labelstudio (this package is installed editable from the repo).
DEFAULT_SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "infra" / "labelstudio"


class LabelStudioServerError(RuntimeError):
    """The local server could not be started or stopped; the message carries the script's output
    (which the scripts keep free of passwords and tokens)."""


def is_installed(scripts_dir: Path = DEFAULT_SCRIPTS_DIR) -> bool:
    """True when the server venv made by ``infra/labelstudio/install.sh`` exists."""
    return (Path(scripts_dir) / ".venv" / "bin" / "label-studio").exists()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def new_token() -> str:
    """A fresh legacy API token (40 hex characters, what Label Studio expects)."""
    return secrets.token_hex(20)


@dataclass
class LocalServer:
    """One Label Studio server on 127.0.0.1:port with its own data dir and local-files root."""

    port: int
    data_dir: Path
    media_root: Path
    username: str
    password: str = field(repr=False)
    token: str = field(repr=False)
    scripts_dir: Path = DEFAULT_SCRIPTS_DIR
    start_timeout_s: float = 240.0

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).resolve()
        self.media_root = Path(self.media_root).resolve()
        self.scripts_dir = Path(self.scripts_dir)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "labelstudio.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "labelstudio.log"

    def _run(self, script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
        env = dict(os.environ)
        env.update(LS_USERNAME=self.username, LS_PASSWORD=self.password, LS_TOKEN=self.token)
        try:
            return subprocess.run(
                ["bash", str(self.scripts_dir / script), *args],
                env=env, capture_output=True, text=True, timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise LabelStudioServerError(f"{script} did not finish within {timeout:.0f} s") from exc

    def start(self) -> None:
        """Start (or find running) and wait until healthy; raises LabelStudioServerError."""
        if not is_installed(self.scripts_dir):
            raise LabelStudioServerError(
                f"Label Studio is not installed in {self.scripts_dir / '.venv'}: run `make install`"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.media_root.mkdir(parents=True, exist_ok=True)
        r = self._run(
            "start.sh", "--port", str(self.port), "--data-dir", str(self.data_dir),
            "--media-root", str(self.media_root), "--pid-file", str(self.pid_file),
            "--log-file", str(self.log_file), "--timeout", str(int(self.start_timeout_s)),
            timeout=self.start_timeout_s + 300,  # + building the template on a first run
        )
        if r.returncode != 0:
            raise LabelStudioServerError(
                f"Label Studio did not start on {self.url} (exit {r.returncode}):\n{r.stderr.strip()}"
            )

    def stop(self) -> None:
        r = self._run("stop.sh", "--pid-file", str(self.pid_file), timeout=60)
        if r.returncode != 0:
            raise LabelStudioServerError(f"stop.sh failed (exit {r.returncode}): {r.stderr.strip()}")

    def status(self) -> str:
        """'running', 'unhealthy' (process up, not answering) or 'stopped'."""
        r = self._run("status.sh", "--pid-file", str(self.pid_file), "--port", str(self.port), timeout=30)
        return {0: "running", 1: "unhealthy"}.get(r.returncode, "stopped")

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
