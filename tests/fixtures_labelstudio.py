"""Label Studio fixtures (imported into tests/conftest.py).

- ``labelstudio``: a fresh, real Label Studio server for the test session, copied from the migrated
  template data dir (seconds, not the ~70 s of a first start), on a free loopback port, with a
  temporary data dir and a local-files root. Yields ``LabelStudioInstance`` which unpacks as
  ``url, token, media_root = labelstudio`` and also carries username/password/log_file.
  Skipped (with the reason) only when the server venv is not installed; ``make install`` installs it.
- ``ls_client``: ``annotation.labelstudio.LabelStudioClient`` for that server.
"""
from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["LabelStudioInstance", "labelstudio", "ls_client"]


@dataclass(frozen=True)
class LabelStudioInstance:
    url: str
    token: str = field(repr=False)
    media_root: Path
    username: str
    password: str = field(repr=False)
    data_dir: Path
    log_file: Path

    def __iter__(self):  # url, token, media_root = labelstudio
        return iter((self.url, self.token, self.media_root))


@pytest.fixture(scope="session")
def labelstudio(tmp_path_factory) -> Iterator[LabelStudioInstance]:
    from annotation.labelstudio.server import (
        DEFAULT_SCRIPTS_DIR, LabelStudioServerError, LocalServer, free_port, is_installed, new_token,
    )

    if not is_installed():
        pytest.skip(
            f"Label Studio server not installed ({DEFAULT_SCRIPTS_DIR / '.venv'} missing): "
            "run `make install` or `bash infra/labelstudio/install.sh`"
        )
    base = tmp_path_factory.mktemp("labelstudio")
    server = LocalServer(
        port=free_port(), data_dir=base / "data", media_root=base / "media",
        username="tests@dataengine.local", password=secrets.token_urlsafe(16), token=new_token(),
    )
    try:
        server.start()
    except LabelStudioServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield LabelStudioInstance(
            url=server.url, token=server.token, media_root=server.media_root,
            username=server.username, password=server.password,
            data_dir=server.data_dir, log_file=server.log_file,
        )
    finally:
        server.stop()


@pytest.fixture(scope="session")
def ls_client(labelstudio):
    from annotation.labelstudio import LabelStudioClient

    return LabelStudioClient(labelstudio.url, labelstudio.token)
