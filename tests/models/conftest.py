"""SAM 2 fixtures: a random-init model of the project config, saved as a checkpoint the project
writes itself, built once per session (a build is ~0.5 s, a save a few MB).

Random weights are enough for every API test: shapes, frame bookkeeping, prompt validation, memory
pruning, storage and export do not depend on what the model has learned.

The helpers (`build_random_predictor`, `write_random_checkpoint`, `make_segmenter`) are plain
functions so that tests outside tests/models (pipelines) can build the same model from their own
fixtures; pytest only shares *fixtures* with the directory below a conftest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

CONFIG = "dataengine_s128"
PREDICTOR_TARGET = "models.sam2.predict.ScoredVideoPredictor"
MODEL_SEED = 0


def build_random_predictor(seed: int = MODEL_SEED, config: str = CONFIG, overrides: dict | None = None):
    """The project config with random weights (seeded, so two builds are identical), on the CPU."""
    from models.sam2.build import build_sam2

    torch.manual_seed(seed)
    return build_sam2(config, predictor=True, device="cpu",
                      overrides={"model._target_": PREDICTOR_TARGET, **(overrides or {})})


def write_random_checkpoint(path: Path, seed: int = MODEL_SEED) -> Path:
    from models.sam2.build import save_checkpoint

    save_checkpoint(build_random_predictor(seed), path, metadata={"config": CONFIG, "seed": seed})
    return path


def make_segmenter(checkpoint: Path, **kwargs):
    """A VideoSegmenter over the checkpoint, built the way the pipelines build it."""
    from models.sam2.build import build_sam2
    from models.sam2.predict import VideoSegmenter

    predictor = build_sam2(CONFIG, checkpoint, device="cpu", overrides={"model._target_": PREDICTOR_TARGET})
    return VideoSegmenter(predictor, **kwargs)


def moving_square_video(frames: int, height: int, width: int, side: int = 24, seed: int = 0):
    """Noise background with a bright square drifting right: (uint8[T,H,W,3], bool[T,H,W])."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 80, size=(frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((frames, height, width), dtype=bool)
    for t in range(frames):
        x = (4 + t) % max(1, width - side)
        y = height // 4
        masks[t, y:y + side, x:x + side] = True
        video[t][masks[t]] = (230, 200, 40)
    return video, masks


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    # A SAM 2 training job shares this 2-core machine: one thread per test process keeps both
    # usable, and makes float results reproducible between runs.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """Path of a random-init `dataengine_s128` checkpoint in the official layout."""
    return write_random_checkpoint(tmp_path_factory.mktemp("sam2") / "dataengine_s128_random.pt")


@pytest.fixture(scope="session")
def segmenter(random_checkpoint):
    """A VideoSegmenter on the random checkpoint. Tracking keeps no state in the segmenter
    (each `track` call makes its own inference state), so one per session is safe."""
    return make_segmenter(random_checkpoint)
