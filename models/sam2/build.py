"""The one place that turns a SAM 2 config + checkpoint into a model or a predictor.

Configs are data: sam2's own Hydra YAML (`_target_` class paths). Two sources are understood:
- the project's configs in `models/sam2/configs/*.yaml` (e.g. `dataengine_s128`), and
- the official SAM 2.1 configs shipped inside the `sam2` wheel, by checkpoint name
  (`sam2.1_hiera_tiny|small|base_plus|large`), so a user holding the official `.pt` files can load them.
Checkpoints come from a local path or an `s3://bucket/key` URI, in the official layout
(`{"model": state_dict}`), which is also the layout the project's trainer writes.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

PROJECT_CONFIG_DIR = Path(__file__).parent / "configs"

# Official SAM 2.1 checkpoint names -> config files inside the sam2 package.
OFFICIAL_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

VIDEO_PREDICTOR_TARGET = "sam2.sam2_video_predictor.SAM2VideoPredictor"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not fit its config (names the source)."""


@dataclass(frozen=True)
class Runtime:
    """Where and how a model runs: CUDA with bf16 autocast when present, else the CPU in fp32."""

    device: torch.device
    autocast_dtype: torch.dtype | None

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def pick_runtime(device: str = "auto") -> Runtime:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        # SAM 2's own demos run under bf16 autocast on Ampere and newer.
        return Runtime(dev, torch.bfloat16)
    return Runtime(dev, None)


def config_name_for_checkpoint(checkpoint: str | os.PathLike) -> str | None:
    """`.../sam2.1_hiera_tiny.pt` -> `sam2.1_hiera_tiny` when it is an official name."""
    stem = Path(str(checkpoint)).name.removesuffix(".pt")
    return stem if stem in OFFICIAL_CONFIGS else None


def load_config(config: str | os.PathLike | DictConfig) -> DictConfig:
    """A project config name, an official checkpoint name, or a YAML path -> an OmegaConf config."""
    if isinstance(config, DictConfig):
        return config.copy()
    text = str(config)
    if text in OFFICIAL_CONFIGS:
        res = importlib.resources.files("sam2").joinpath(OFFICIAL_CONFIGS[text])
        return OmegaConf.create(res.read_text())
    path = Path(text)
    if not path.suffix:
        path = PROJECT_CONFIG_DIR / f"{text}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in PROJECT_CONFIG_DIR.glob("*.yaml")) + sorted(OFFICIAL_CONFIGS)
        raise FileNotFoundError(f"SAM 2 config {text!r} not found (known: {', '.join(known)})")
    return OmegaConf.load(path)


def apply_overrides(cfg: DictConfig, overrides: dict[str, Any]) -> DictConfig:
    cfg = cfg.copy()
    for dotted, value in overrides.items():
        OmegaConf.update(cfg, dotted, value, force_add=True)
    return cfg


def fetch_checkpoint(uri: str | os.PathLike, cache_dir: Path | None = None,
                     s3_endpoint_url: str | None = None, s3_region: str | None = None,
                     s3_options: dict | None = None) -> Path:
    """A local path is returned as is; `s3://bucket/key` is downloaded once into cache_dir.

    `s3_options` go to `S3BlobStore` (e.g. aws_access_key_id / aws_secret_access_key): storage
    reads no environment, so explicit credentials must be passable here."""
    text = str(uri)
    if not text.startswith("s3://"):
        path = Path(text.removeprefix("file://"))
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} does not exist")
        return path
    from storage.blobs import BlobStoreError, open_blob_store

    bucket, _, key = text[len("s3://"):].partition("/")
    if not bucket or not key:
        raise CheckpointError(f"checkpoint URI {text!r} must look like s3://bucket/key.pt")
    cache_dir = Path(cache_dir or Path(tempfile.gettempdir()) / "dataengine-checkpoints")
    cache_dir.mkdir(parents=True, exist_ok=True)
    dest = cache_dir / (hashlib.sha256(text.encode()).hexdigest()[:16] + "-" + Path(key).name)
    if not dest.is_file():
        store = open_blob_store(f"s3://{bucket}", endpoint_url=s3_endpoint_url,
                                region=s3_region or "us-east-1", **(s3_options or {}))
        try:
            store.download(key, dest)
        except BlobStoreError as exc:  # missing key/bucket, unreachable: one error type for callers
            raise CheckpointError(f"cannot fetch checkpoint {text}: {exc}") from exc
    return dest


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Returns (state_dict, metadata) from a checkpoint file in the official layout."""
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds; the caller needs the file name
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from exc
    if not isinstance(blob, dict) or "model" not in blob:
        raise CheckpointError(f"checkpoint {path} has no 'model' entry (not a SAM 2 checkpoint)")
    meta = blob.get("dataengine", {}) if isinstance(blob.get("dataengine"), dict) else {}
    return blob["model"], meta


def instantiate_model(cfg: DictConfig, predictor: bool = False, overrides: dict | None = None):
    overrides = dict(overrides or {})
    if predictor:
        # The official predictor class unless the caller names its own (e.g. a subclass such as
        # ScoredVideoPredictor): an explicit `model._target_` override must not be replaced.
        overrides.setdefault("model._target_", VIDEO_PREDICTOR_TARGET)
    cfg = apply_overrides(cfg, overrides)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


# Inference settings for models trained here (see docs/sam2.md): the package's post-processing
# (dynamic multimask via stability) would swap in untrained multimask outputs, so it stays off, but
# masks from clicks are binarized before memory encoding as the official predictor does.
PREDICTOR_OVERRIDES = {
    "model.binarize_mask_from_pts_for_mem_enc": True,
    "model.fill_hole_area": 0,
}


def build_sam2(config, checkpoint: str | os.PathLike | None = None, *, device: str = "auto",
               predictor: bool = True, overrides: dict | None = None, mode: str = "eval",
               s3_endpoint_url: str | None = None, cache_dir: Path | None = None,
               s3_options: dict | None = None):
    """Build a SAM 2 model (predictor=False) or `SAM2VideoPredictor` (predictor=True).

    `config` may be None when `checkpoint` has an official name (`sam2.1_hiera_small.pt`).
    """
    if config is None:
        config = config_name_for_checkpoint(checkpoint) if checkpoint else None
        if config is None:
            raise ValueError("a config is needed unless the checkpoint has an official SAM 2.1 name")
    cfg = load_config(config)
    all_overrides = dict(PREDICTOR_OVERRIDES) if predictor else {}
    all_overrides.update(overrides or {})
    model = instantiate_model(cfg, predictor=predictor, overrides=all_overrides)
    if checkpoint is not None:
        path = fetch_checkpoint(checkpoint, cache_dir=cache_dir, s3_endpoint_url=s3_endpoint_url,
                                s3_options=s3_options)
        state, _ = read_state_dict(path)
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as exc:  # strict=False still raises on tensors of another shape
            raise CheckpointError(f"checkpoint {checkpoint} does not fit config {config}: {exc}") from exc
        if missing or unexpected:
            raise CheckpointError(
                f"checkpoint {checkpoint} does not fit config {config}: "
                f"{len(missing)} missing keys (e.g. {missing[:3]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})"
            )
    runtime = pick_runtime(device)
    model = model.to(runtime.device)
    if mode == "eval":
        model.eval()
    else:
        model.train()
    return model


def save_checkpoint(model: torch.nn.Module, path: Path, metadata: dict | None = None) -> str:
    """Write `{"model": state_dict, "dataengine": metadata}` atomically; returns its sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": state, "dataengine": metadata or {}}, tmp)
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
