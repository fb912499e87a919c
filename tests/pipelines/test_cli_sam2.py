"""The SAM 2 commands as a user runs them: `eval sam2 --json` prints one JSON object with the keys
the issue names as its last line; `train sam2` writes a checkpoint that `eval` can load; the
shipped base checkpoint is registered and promoted on first use."""
import json

import pytest
from typer.testing import CliRunner

from tests.models.conftest import write_random_checkpoint

pytestmark = pytest.mark.sam2

EVAL_KEYS = {"j_mask", "jf_mask", "j_box", "baseline_j", "auto_recall", "iou_spearman", "model_version"}


@pytest.fixture()
def cli_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAENGINE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.chdir(tmp_path)
    from pipelines.cli import app

    return CliRunner(), app


def test_eval_json_last_line_has_the_issue_keys(cli_env, tmp_path):
    runner, app = cli_env
    ckpt = write_random_checkpoint(tmp_path / "random.pt")
    res = runner.invoke(app, ["eval", "sam2", "--seed", "5", "--videos", "1", "--frames", "4",
                              "--domain", "base", "--checkpoint", str(ckpt), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert EVAL_KEYS <= set(doc)
    assert doc["model_version"] == str(ckpt)
    assert 0.0 <= doc["baseline_j"] <= 1.0 and 0.0 <= doc["j_mask"] <= 1.0


def test_train_then_eval_round_trip(cli_env, tmp_path):
    runner, app = cli_env
    out = tmp_path / "train"
    res = runner.invoke(app, ["train", "sam2", "--out", str(out), "--image-steps", "2",
                              "--video-steps", "1", "--threads", "1"])
    assert res.exit_code == 0, res.output
    final = out / "final.pt"
    assert final.is_file()
    res = runner.invoke(app, ["eval", "sam2", "--seed", "9", "--videos", "1", "--frames", "3",
                              "--no-auto", "--checkpoint", str(final), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout.strip().splitlines()[-1])
    assert doc["auto_recall"] is None and doc["objects_prompted"] >= 1


def test_production_model_is_bootstrapped_from_the_shipped_checkpoint(cli_env):
    runner, app = cli_env
    from models.sam2 import BASE_CHECKPOINT

    assert BASE_CHECKPOINT.is_file(), "the base SAM 2 checkpoint must ship with the project"
    res = runner.invoke(app, ["eval", "sam2", "--seed", "3", "--videos", "1", "--frames", "3",
                              "--no-auto", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["model_version"] == "sam2-base"
    res = runner.invoke(app, ["models", "list"])
    assert "sam2-base" in res.stdout and "production" in res.stdout
