"""Which SAM 2 runs: the registry's production version, a named version, or a checkpoint file.

On a fresh installation the registry is empty: the base checkpoint shipped with the project
(`models/sam2/checkpoints/`) is registered and promoted once, so every later round starts from a
registry version with a sha256 and lineage rather than from a loose file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from models.registry import ModelRegistry
from models.sam2 import BASE_CHECKPOINT, BASE_CONFIG
from models.sam2.build import build_sam2, read_state_dict
from models.sam2.predict import VideoSegmenter

SAM2_FAMILY = "sam2"
PREDICTOR_TARGET = "models.sam2.predict.ScoredVideoPredictor"


@dataclass
class LoadedSam2:
    segmenter: VideoSegmenter
    version: str  # registry version, or the checkpoint path when loaded from a file
    model_version_id: int | None
    checkpoint: Path
    config: str


def ensure_base_model(registry: ModelRegistry) -> None:
    """Register and promote the shipped base checkpoint if the family has no production version."""
    if registry.production(SAM2_FAMILY) is not None:
        return
    if not BASE_CHECKPOINT.is_file():
        raise FileNotFoundError(
            f"no production SAM 2 version in the registry and no shipped checkpoint at {BASE_CHECKPOINT}; "
            "train one with `dataengine train sam2` and register it with `dataengine models register`")
    _, meta = read_state_dict(BASE_CHECKPOINT)
    info = registry.register(SAM2_FAMILY, BASE_CHECKPOINT, version="sam2-base",
                             config={"config": meta.get("config", BASE_CONFIG)},
                             metrics=meta.get("metrics", {}),
                             notes="shipped base model (synthetic base domain)")
    registry.promote(SAM2_FAMILY, info.version)


def build_segmenter(checkpoint: Path, config: str | None = None, device: str = "auto") -> tuple[VideoSegmenter, str]:
    if config is None:
        _, meta = read_state_dict(checkpoint)
        config = meta.get("config", BASE_CONFIG)
    predictor = build_sam2(config, checkpoint, device=device,
                           overrides={"model._target_": PREDICTOR_TARGET})
    return VideoSegmenter(predictor), config


def load_sam2(registry: ModelRegistry | None, *, version: str | None = None,
              checkpoint: Path | None = None, cache_dir: Path, device: str = "auto") -> LoadedSam2:
    """A checkpoint file wins; else `version` from the registry; else its production version."""
    if checkpoint is not None:
        seg, cfg = build_segmenter(Path(checkpoint), device=device)
        return LoadedSam2(seg, str(checkpoint), None, Path(checkpoint), cfg)
    if registry is None:
        raise ValueError("a registry or a checkpoint is needed to load SAM 2")
    if version is None:
        ensure_base_model(registry)
        info = registry.production(SAM2_FAMILY)
    else:
        info = registry.get(SAM2_FAMILY, version)
    path = registry.fetch_artifact(SAM2_FAMILY, info.version, cache_dir)
    seg, cfg = build_segmenter(path, (info.config or {}).get("config"), device=device)
    return LoadedSam2(seg, info.version, info.id, path, cfg)
