"""The FiftyOne App, headless, on a published dataset: a Chromium screenshot of the grid with mask
overlays (kept under test-artifacts/), and the page must not be an error page. Also the mongod
scripts (start / status / port check / stop)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from storage.blobs import LocalBlobStore
from tests.fixtures_fiftyone import make_curation_data

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


def test_mongod_scripts_start_status_refuse_busy_port_stop(fiftyone_db, tmp_path):
    from annotation.fiftyone.mongod import MongoServer, MongoServerError, free_port

    server = MongoServer(port=free_port(), base_dir=tmp_path / "m1")
    server.start()
    try:
        assert server.status() == "running"
        assert server.pid_file.read_text().strip().isdigit()
        server.start()  # already running: a no-op
        other = MongoServer(port=server.port, base_dir=tmp_path / "m2")
        with pytest.raises(MongoServerError, match="already in use"):
            other.start()
    finally:
        server.stop()
    assert server.status() == "stopped" and not server.pid_file.exists()
    server.stop()  # stopping twice is fine


@pytest.mark.browser
def test_app_shows_the_dataset_grid_with_masks(fiftyone_db, sqlite_url, tmp_path, fo_dataset_name):
    from PIL import Image

    from annotation.fiftyone.app import AppServer, find_chromium, screenshot
    from annotation.fiftyone.mongod import free_port
    from annotation.fiftyone.publish import publish
    from storage.db import make_engine

    if find_chromium() is None or shutil.which("chromedriver") is None:
        pytest.skip("chromium + chromium-driver are not installed (infra/install.sh installs them)")
    engine = make_engine(sqlite_url)
    blobs = LocalBlobStore(tmp_path / "blobs")
    data = make_curation_data(engine, blobs, tmp_path, videos=4, frames=8, size=96)
    publish(engine, blobs, data.dataset, fo_dataset=fo_dataset_name)
    engine.dispose()

    app = AppServer(port=free_port(), env=fiftyone_db.env, log_file=tmp_path / "app.log")
    with app:
        shot = screenshot(app.dataset_url(fo_dataset_name), ARTIFACTS / "fiftyone_grid.png",
                          ready_text=fo_dataset_name, min_canvases=4)
    (ARTIFACTS / "fiftyone_grid.dom.html").write_text(shot.dom)
    assert shot.png.stat().st_size > 10_000
    assert not shot.error_markers, shot.error_markers
    assert fo_dataset_name in shot.dom  # the dataset page, not a landing or error page
    img = np.asarray(Image.open(shot.png).convert("RGB")).astype(int)
    assert img.std() > 10  # not a blank page
