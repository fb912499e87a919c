"""models.sam2.build: configs -> models, checkpoints in and out (local files and S3 via moto's
real server), and the errors a wrong or missing checkpoint gives."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
import torch
from omegaconf import DictConfig

from models.sam2.build import (
    OFFICIAL_CONFIGS,
    CheckpointError,
    build_sam2,
    fetch_checkpoint,
    load_config,
    read_state_dict,
    save_checkpoint,
)
from models.sam2.predict import Prompt, ScoredVideoPredictor, VideoSegmenter
from tests.fixtures_s3 import S3_TEST_CREDENTIALS
from tests.models.conftest import CONFIG, PREDICTOR_TARGET, build_random_predictor, moving_square_video

pytestmark = pytest.mark.sam2


def _track_outputs(predictor, frames, mask):
    """Everything a tracked video yields, as plain arrays (for exact comparisons)."""
    seg = VideoSegmenter(predictor)
    out = list(seg.track(frames, [Prompt(object_id=1, frame_index=0, mask=mask)]))
    return (np.stack([r.masks for r in out]), np.stack([r.pred_iou for r in out]),
            np.stack([r.object_score for r in out]))


def test_project_config_builds_base_model_and_scored_predictor():
    from sam2.modeling.sam2_base import SAM2Base

    base = build_sam2(CONFIG, predictor=False, device="cpu")
    assert type(base) is SAM2Base
    assert not base.training  # mode="eval" by default

    predictor = build_sam2(CONFIG, predictor=True, device="cpu",
                           overrides={"model._target_": PREDICTOR_TARGET})
    # The explicit target must win over the stock SAM2VideoPredictor: without it no IoU estimate
    # is kept with the outputs.
    assert type(predictor) is ScoredVideoPredictor
    assert predictor.image_size == 128
    # Inference settings the project needs for models trained here (see PREDICTOR_OVERRIDES).
    assert predictor.binarize_mask_from_pts_for_mem_enc is True
    assert predictor.multimask_output_in_sam is False
    # Same architecture, same parameter count, whichever wrapper class.
    n = lambda m: sum(p.numel() for p in m.parameters())
    assert n(base) == n(predictor) > 1_000_000


@pytest.mark.parametrize("name", sorted(OFFICIAL_CONFIGS))
def test_official_config_names_resolve(name):
    cfg = load_config(name)
    assert isinstance(cfg, DictConfig)
    assert cfg.model._target_ == "sam2.modeling.sam2_base.SAM2Base"
    assert cfg.model.image_size == 1024  # the published SAM 2.1 resolution
    assert cfg.model.image_encoder.trunk._target_.endswith("Hiera")


def test_official_tiny_instantiates():
    # Only tiny is built (~39 M parameters, no forward pass): the others differ in sizes only.
    model = build_sam2("sam2.1_hiera_tiny", predictor=False, device="cpu")
    n_params = sum(p.numel() for p in model.parameters())
    assert 30e6 < n_params < 50e6, n_params
    assert model.image_size == 1024


def test_config_named_by_official_checkpoint_file(tmp_path):
    # build_sam2(None, "<dir>/sam2.1_hiera_tiny.pt") picks the config from the file name; a file
    # that does not exist must then be named in the error (not a config error).
    missing = tmp_path / "sam2.1_hiera_tiny.pt"
    with pytest.raises(CheckpointError, match=str(missing)):
        build_sam2(None, missing, predictor=False, device="cpu")
    with pytest.raises(ValueError, match="config is needed"):
        build_sam2(None, tmp_path / "my_model.pt", device="cpu")


def test_unknown_config_lists_known_ones():
    with pytest.raises(FileNotFoundError, match=CONFIG):
        load_config("no_such_config")


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    original = build_random_predictor(seed=3)
    sha = save_checkpoint(original, tmp_path / "m.pt", metadata={"config": CONFIG, "note": "round trip"})
    assert len(sha) == 64
    state, meta = read_state_dict(tmp_path / "m.pt")
    assert meta == {"config": CONFIG, "note": "round trip"}
    assert set(state) == set(original.state_dict())

    # A model built with a *different* seed, then loaded, must behave exactly like the original.
    torch.manual_seed(99)
    loaded = build_sam2(CONFIG, tmp_path / "m.pt", device="cpu", overrides={"model._target_": PREDICTOR_TARGET})
    frames, masks = moving_square_video(6, 64, 96)
    a = _track_outputs(original, frames, masks[0])
    b = _track_outputs(loaded, frames, masks[0])
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # ... and unlike a model that was not loaded (so the comparison above can fail).
    other = _track_outputs(build_random_predictor(seed=4), frames, masks[0])
    assert not np.array_equal(a[1], other[1])


@pytest.mark.s3
def test_checkpoint_from_s3_uri(tmp_path, random_checkpoint, moto_endpoint, s3_client, s3_bucket):
    key = f"checkpoints/{uuid.uuid4().hex[:8]}/dataengine_s128.pt"
    s3_client.upload_file(str(random_checkpoint), s3_bucket, key)
    uri = f"s3://{s3_bucket}/{key}"

    model = build_sam2(CONFIG, uri, device="cpu", predictor=False, s3_endpoint_url=moto_endpoint,
                       cache_dir=tmp_path / "cache", s3_options=S3_TEST_CREDENTIALS)
    expected, _ = read_state_dict(random_checkpoint)
    got = model.state_dict()
    assert all(torch.equal(got[k], v) for k, v in expected.items())
    # Downloaded once into the cache, under the object's file name.
    cached = list((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and cached[0].name.endswith("-dataengine_s128.pt")
    assert cached[0].read_bytes() == random_checkpoint.read_bytes()

    # A key that is not there is a CheckpointError naming the URI, like a missing local file.
    missing = f"s3://{s3_bucket}/checkpoints/absent.pt"
    with pytest.raises(CheckpointError, match=missing):
        fetch_checkpoint(missing, cache_dir=tmp_path / "cache", s3_endpoint_url=moto_endpoint,
                         s3_options=S3_TEST_CREDENTIALS)
    with pytest.raises(CheckpointError, match="s3://bucket/key.pt"):
        fetch_checkpoint(f"s3://{s3_bucket}", cache_dir=tmp_path / "cache")


def test_checkpoint_of_another_config_is_refused(tmp_path, random_checkpoint):
    # Different keys: an object-pointer projection that is a Linear instead of an MLP.
    with pytest.raises(CheckpointError, match=r"does not fit config .*missing keys"):
        build_sam2(CONFIG, random_checkpoint, device="cpu",
                   overrides={"model.use_mlp_for_obj_ptr_proj": False})
    # Same keys, other shapes (5 memory slots instead of 7): torch raises even with strict=False.
    with pytest.raises(CheckpointError, match=str(random_checkpoint)):
        build_sam2(CONFIG, random_checkpoint, device="cpu", overrides={"model.num_maskmem": 5})


def test_missing_or_unreadable_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(CheckpointError, match=str(missing)):
        build_sam2(CONFIG, missing, device="cpu")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match=str(garbage)):
        build_sam2(CONFIG, garbage, device="cpu")

    not_sam2 = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(3)}, not_sam2)
    with pytest.raises(CheckpointError, match="no 'model' entry"):
        build_sam2(CONFIG, not_sam2, device="cpu")
