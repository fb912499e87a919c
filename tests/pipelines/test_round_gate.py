"""The gate and the step ledger of the closed loop (fast: no Label Studio, no Ray)."""
from __future__ import annotations

import pytest


def _settings(tmp_path, db_url, **kw):
    from pipelines.settings import Settings

    return Settings(work_dir=tmp_path / "work", database_url=db_url, val_videos=2, round_frames=8,
                    round_objects=2, **kw)


def test_gate_rule():
    from pipelines.round_steps import gate

    assert gate({"jf_mask": 0.71}, {"jf_mask": 0.70}, "jf_mask", 0.0)
    assert not gate({"jf_mask": 0.705}, {"jf_mask": 0.70}, "jf_mask", 0.01)
    assert not gate({"jf_mask": 0.70}, {"jf_mask": 0.70}, "jf_mask", 0.0)
    assert not gate({"jf_mask": None}, {"jf_mask": 0.70}, "jf_mask", 0.0)


def test_round_training_clips_must_fit_the_round_videos(tmp_path):
    from pydantic import ValidationError

    from pipelines.settings import Settings

    msg = r"train_clip_frames \(12\) must be between 2 and round_frames \(8\)"
    with pytest.raises(ValidationError, match=msg):
        Settings(work_dir=tmp_path, round_frames=8, train_clip_frames=12)
    with pytest.raises(ValidationError, match="train_clips_per_step"):
        Settings(work_dir=tmp_path, train_clips_per_step=0)
    assert Settings(work_dir=tmp_path, round_frames=8).train_clip_frames is None  # whole videos


def test_step_ledger_runs_a_finished_step_once(tmp_path, sqlite_url):
    from pipelines.round_steps import run_step
    from storage.db import make_engine

    engine = make_engine(sqlite_url)
    calls = []

    def fn():
        calls.append(1)
        return {"n": len(calls)}

    assert run_step(engine, "d", 1, "ingest", fn) == {"n": 1}
    assert run_step(engine, "d", 1, "ingest", fn) == {"n": 1}
    assert len(calls) == 1

    def boom():
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        run_step(engine, "d", 1, "sync", boom)
    assert run_step(engine, "d", 1, "sync", fn) == {"n": 2}  # a failed step runs again


@pytest.mark.sam2
def test_gate_keeps_production_against_a_worse_candidate(tmp_path, sqlite_url):
    """A deliberately worse candidate (random-init weights) is evaluated on the fixed validation
    split and NOT promoted; production's validation J&F stays what it was."""
    from models.sam2.build import save_checkpoint
    from pipelines.round_steps import RoundContext, gate_step
    from pipelines.sam2_runtime import SAM2_FAMILY, ensure_base_model
    from tests.models.conftest import build_random_predictor

    settings = _settings(tmp_path, sqlite_url)
    ctx = RoundContext.build(settings, "gate", 1)
    ensure_base_model(ctx.registry)
    base = ctx.registry.production(SAM2_FAMILY).version
    ckpt = tmp_path / "random.pt"
    save_checkpoint(build_random_predictor(3), ckpt, {"config": "dataengine_s128"})
    bad = ctx.registry.register(SAM2_FAMILY, ckpt, config={"config": "dataengine_s128"},
                                parent_version=base, notes="deliberately worse")
    res = gate_step(ctx, candidate=bad.version)
    print(res["candidate_val"]["jf_mask"], res["production_val"]["jf_mask"])
    assert res["promoted"] is False
    assert res["candidate_val"]["jf_mask"] < res["production_val"]["jf_mask"]
    assert ctx.registry.production(SAM2_FAMILY).version == base
    chain = [i.version for i in ctx.registry.lineage(SAM2_FAMILY, bad.version)]
    assert base in chain  # lineage: the parent it was fine-tuned from
