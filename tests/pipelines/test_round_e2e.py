"""One small round of the closed loop end to end: real Label Studio server, Prefect test harness,
a local Ray cluster (2 Ray Train workers on the CPU) and PostgreSQL. Then the resume: the ledger
rows of the later steps are removed (as if the run had been killed after doing their work but
before recording it) and the flow runs again: no duplicate Label Studio task or annotation, no
second training, one registry version per training."""
from __future__ import annotations

import time

import pytest
from sqlalchemy import delete, func, select

pytest.importorskip("prefect")
pytest.importorskip("ray.train.torch")


@pytest.fixture(scope="module")
def prefect_harness(tmp_path_factory):
    import os

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ.setdefault("PREFECT_HOME", str(home))
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.labelstudio
@pytest.mark.sam2
def test_one_round_end_to_end_and_resume(tmp_path, pg_url, labelstudio, ls_client, prefect_harness,
                                         monkeypatch):
    from models.registry import ModelRegistry
    from pipelines.flows.round import data_engine_round
    from pipelines.settings import Settings
    from storage.schema import AnnotationTask, EffortEvent, Masklet, ModelVersion, PipelineRun

    env = {"WORK_DIR": str(tmp_path / "work"), "DATABASE_URL": pg_url,
           "LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_TOKEN": labelstudio.token,
           "LABEL_STUDIO_MEDIA_ROOT": str(labelstudio.media_root), "ROUND_VIDEOS": "2",
           "ROUND_FRAMES": "8", "ROUND_OBJECTS": "2", "CHUNK_FRAMES": "8", "VAL_VIDEOS": "2",
           "TRAIN_IMAGE_STEPS": "3", "TRAIN_VIDEO_STEPS": "2", "ANNOTATION_TIMEOUT_S": "60",
           "ANNOTATION_POLL_S": "1"}
    for k, v in env.items():
        monkeypatch.setenv(f"DATAENGINE_{k}", v)
    settings = Settings()
    engine = settings.engine()
    started = time.time()
    out = data_engine_round(dataset="e2e", round_number=1, seed=3)
    first = time.time() - started
    print(f"round 1: {first:.0f} s; effort {out['effort']}; gate {out['gate']['promoted']}")
    eff = out["effort"]
    assert eff["round"] == 1 and eff["frames"] == 2 * 2 * 8 or eff["frames"] > 0
    assert 0 < eff["frames_edited_pct"] <= 100
    assert eff["clicks_per_frame"] > 0 and eff["seconds_per_frame"] > 0
    assert out["sync"]["applied"] >= 1
    assert out["train"]["candidate"] and out["train"]["reused"] is False
    assert eff["val_jf"] is not None
    # the round reports what its training spent: whole 8-frame round videos as clips by default
    assert eff["train_seconds"] > 0 and eff["train_budget"]["clip_frames"] == 8

    # Verification: every re-propagated masklet judged once in Label Studio, synced back.
    ver = out["verify"]
    assert ver["masklets"] >= 2 and out["repropagate"]["masklets"] == ver["masklets"]
    assert ver["accepted_first_pass"] + len(ver["sent_back"]) == ver["masklets"]
    assert eff["accepted_first_pass_pct"] == ver["accepted_first_pass_pct"]
    assert eff["verification_seconds_per_frame"] > 0

    def count_tasks(c, kind):
        return c.scalar(select(func.count()).select_from(AnnotationTask).where(AnnotationTask.kind == kind))

    with engine.connect() as c:
        tasks = count_tasks(c, "correction")
        vtasks = count_tasks(c, "verification")
        statuses = dict(c.execute(select(Masklet.status, func.count()).where(
            Masklet.source_kind == "repropagated").group_by(Masklet.status)).all())
        versions = c.scalar(select(func.count()).select_from(ModelVersion))
        corrected = c.scalar(select(func.count()).select_from(Masklet)
                             .where(Masklet.source_kind == "scripted_annotator"))
        efforts = c.scalar(select(func.count()).select_from(EffortEvent))
        modes = set(c.scalars(select(EffortEvent.mode).distinct()))
    assert corrected >= 2 and efforts >= 2
    assert modes <= {"interactive", "manual", "review"} and "review" in modes
    assert statuses.get("verified", 0) == ver["accepted_first_pass"]
    assert statuses.get("in_review", 0) == len(ver["sent_back"])
    assert vtasks == len(ver["tasks"]) > 0
    ls_tasks = list(ls_client.iter_tasks(out["push"]["project_id"], include="id"))
    ls_anns = sum(len(ls_client.list_annotations(int(t["id"]))) for t in ls_tasks)
    assert len(ls_tasks) == tasks
    ls_vtasks = list(ls_client.iter_tasks(ver["project_id"], include="id"))
    ls_vanns = sum(len(ls_client.list_annotations(int(t["id"]))) for t in ls_vtasks)
    assert len(ls_vtasks) == vtasks and ls_vanns == vtasks

    # Re-running a finished round does nothing.
    again = data_engine_round(dataset="e2e", round_number=1, seed=3)
    assert again["effort"] == out["effort"]

    # "Killed" after the work but before the ledger recorded it: the later steps run again.
    with engine.begin() as c:
        c.execute(delete(PipelineRun).where(PipelineRun.run_key.in_(
            [f"e2e/round1/{s}" for s in ("push", "annotate", "sync", "repropagate", "verify", "train",
                                          "gate", "effort")])))
    resumed = data_engine_round(dataset="e2e", round_number=1, seed=3)
    assert resumed["train"]["reused"] is True
    assert resumed["train"]["candidate"] == out["train"]["candidate"]
    with engine.connect() as c:
        assert count_tasks(c, "correction") == tasks and count_tasks(c, "verification") == vtasks
        assert c.scalar(select(func.count()).select_from(ModelVersion)) == versions
    ls_tasks2 = list(ls_client.iter_tasks(out["push"]["project_id"], include="id"))
    assert len(ls_tasks2) == len(ls_tasks)
    assert sum(len(ls_client.list_annotations(int(t["id"]))) for t in ls_tasks2) == ls_anns
    ls_vtasks2 = list(ls_client.iter_tasks(ver["project_id"], include="id"))
    assert len(ls_vtasks2) == vtasks
    assert sum(len(ls_client.list_annotations(int(t["id"]))) for t in ls_vtasks2) == ls_vanns
    reg = ModelRegistry(engine, settings.blob_store())
    lineage = [i.version for i in reg.lineage("sam2", out["train"]["candidate"])]
    assert "sam2-base" in lineage  # the parent version
    # The report reads what the rounds stored.
    from pipelines.effort_report import load_rows, write_report

    modes_rows, rounds = load_rows(engine, "e2e")
    paths = write_report(settings, "e2e", modes_rows, rounds)
    assert paths["png"].stat().st_size > 1000 and "round" in paths["html"].read_text()
