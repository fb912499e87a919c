"""`dataengine curate publish|sync` end to end through the CLI and the settings (composition root),
against the session's real mongod and a real SQLite database + local blob store in a work dir."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner


@pytest.fixture
def work_env(tmp_path, monkeypatch, fiftyone_db, fo_dataset_name):
    monkeypatch.setenv("DATAENGINE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.delenv("DATAENGINE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATAENGINE_BLOB_URI", raising=False)
    # The process is already connected to the session database: same URI and name.
    monkeypatch.setenv("DATAENGINE_FIFTYONE_DATABASE_URI", fiftyone_db.uri)
    monkeypatch.setenv("DATAENGINE_FIFTYONE_DATABASE_NAME", fiftyone_db.name)
    monkeypatch.setenv("DATAENGINE_FIFTYONE_DATASET_PREFIX", f"{fo_dataset_name}-")
    yield fo_dataset_name
    import fiftyone as fo

    if fo.dataset_exists(f"{fo_dataset_name}-clips"):
        fo.delete_dataset(f"{fo_dataset_name}-clips")


def test_curate_publish_then_sync_requeues_the_tagged_video(work_env, tmp_path):
    import fiftyone as fo

    from pipelines.cli import app
    from pipelines.settings import Settings
    from tests.fixtures_fiftyone import make_curation_data

    s = Settings()
    engine = s.engine()
    data = make_curation_data(engine, s.blob_store(), tmp_path, videos=2, frames=4)
    engine.dispose()
    runner = CliRunner()
    r = runner.invoke(app, ["curate", "publish", "--dataset", "clips"])
    assert r.exit_code == 0, r.output
    assert "+2 new" in r.output
    ds = fo.load_dataset(f"{work_env}-clips")
    ds.match({"video_id": data.video_ids[1]}).tag_samples("reannotate")

    r = runner.invoke(app, ["curate", "sync", "--dataset", "clips"])
    assert r.exit_code == 0, r.output
    assert "1 new" in r.output
    assert f"videos to re-queue next round: [{data.video_ids[1]}]" in r.output

    r = runner.invoke(app, ["curate", "publish", "--dataset", "clips"])
    assert r.exit_code == 0 and "up to date" in r.output, r.output


def test_curate_publish_unknown_dataset_fails_clearly(work_env):
    from pipelines.cli import app

    r = CliRunner().invoke(app, ["curate", "publish", "--dataset", "nope"])
    assert r.exit_code == 1
    assert "'nope' does not exist" in r.output
