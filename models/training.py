"""Retraining on Ray: Ray Train's ``TorchTrainer`` fine-tunes SAM 2 (``models.sam2.train``) on the
corrected masklets of the annotation rounds, data-parallel over ``num_workers`` workers.

- Every worker builds the same model from ``init_checkpoint`` (the production version); rank 0's
  weights are broadcast once so that all start identical.
- Data parallel: each worker gets its shard of the corrected videos (``videos[rank::world]``) and
  its own replay stream of the pre-training domain (seed + rank); after every backward pass the
  gradients of all parameters are averaged with ONE ``all_reduce`` (gloo on CPU, NCCL on GPU).
  Parameters that a worker's step did not touch contribute zeros, so every worker takes part in
  every reduction (no deadlock when workers pick different prompt kinds).
- Steps, not wall-clock budgets: workers must agree on the number of steps.
- Rank 0 writes the checkpoint and reports it through ``ray.train.report``; the driver copies it
  into the blob store (content-addressed) and returns its key and the metrics.

Runs on a private local cluster (``address="local"``) or attaches to an existing one (an address).
This module imports only ``models`` and ``storage``: the caller passes every setting explicitly.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = ["RayClusterSpec", "RayTrainResult", "TrainVideo", "ray_session", "train_on_ray"]

RAY_ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


@dataclass
class TrainVideo:
    """A video with its corrected masks, shaped like ``storage.synthetic.videos.SyntheticVideo``
    (what ``models.sam2.train`` samples from)."""

    name: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    masks: np.ndarray  # bool [T, O, H, W]
    domain: str = "corrected"

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class RayClusterSpec:
    address: str = "local"  # "local": a private cluster; else an existing cluster's address
    num_cpus: int = 2  # local cluster only
    object_store_mb: int = 256  # local cluster only
    num_workers: int = 2
    cpus_per_worker: float = 1.0
    gpu_per_worker: float = 0.0  # fractional GPUs: the same workers can serve enrichment too
    env: dict[str, str] = field(default_factory=dict)  # RAY_* variables to set before init


@dataclass
class RayTrainResult:
    checkpoint_key: str  # blob key of the fine-tuned checkpoint
    checkpoint_path: Path  # a local copy
    metrics: dict[str, Any]
    seconds: float


class ray_session:
    """Context manager: a Ray connection (a private local cluster, or an existing one). Never runs
    ``ray stop``; shuts down only the connection (and the cluster) it started."""

    def __init__(self, spec: RayClusterSpec):
        self.spec = spec
        self.started = False

    def __enter__(self):
        import ray

        for k, v in {**RAY_ENV_DEFAULTS, **self.spec.env}.items():
            os.environ.setdefault(k, v)
        if ray.is_initialized():
            return self
        if self.spec.address == "local":
            ray.init(address="local", num_cpus=self.spec.num_cpus,
                     object_store_memory=self.spec.object_store_mb * 2**20,
                     include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=self.spec.address, log_to_driver=False)
        self.started = True
        return self

    def __exit__(self, *exc):
        import ray

        if self.started:
            ray.shutdown()
        return False


class _SyncedLoss:
    """Wraps a loss so that ``backward()`` also averages every gradient across the workers (the
    trainer's loop calls ``loss.backward()`` and ``float(loss.detach())``)."""

    def __init__(self, loss, params, world: int):
        self.loss, self.params, self.world = loss, params, world

    def detach(self):
        return self.loss.detach()

    def backward(self):
        import torch
        import torch.distributed as dist

        self.loss.backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        off = 0
        for p, g in zip(self.params, grads):
            n = g.numel()
            p.grad = flat[off:off + n].view_as(p).clone()
            off += n


def _train_loop(config: dict) -> None:
    """Runs on every Ray Train worker."""
    import ray.train
    import torch
    import torch.distributed as dist

    from models.sam2.train import Sam2Trainer, TrainConfig

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    cfg = TrainConfig(**config["cfg"])
    cfg = replace(cfg, seed=cfg.seed + rank, threads=config["threads"],
                  out_dir=str(Path(tempfile.mkdtemp(prefix=f"dataengine-train-r{rank}-"))))
    videos = [TrainVideo(n, f, m) for n, f, m in config["videos"]]
    shard = videos[rank::world] if len(videos) >= world else videos
    trainer = Sam2Trainer(cfg, shard)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    with torch.no_grad():
        for p in trainer.model.parameters():
            dist.broadcast(p.data, src=0)
    image_step, video_step = trainer.image_step, trainer.video_step

    def synced(step_fn):
        def go():
            loss, stats = step_fn()
            return _SyncedLoss(loss, params, world), stats
        return go

    trainer.image_step, trainer.video_step = synced(image_step), synced(video_step)
    final = trainer.train()
    val = trainer.validate()
    metrics = {"rank": rank, "world": world, "steps": trainer.steps_done,
               "videos_in_shard": len(shard), **{k: round(float(v), 4) for k, v in val.items()}}
    if rank == 0:
        ckpt_dir = Path(tempfile.mkdtemp(prefix="dataengine-ckpt-"))
        shutil.copy(final, ckpt_dir / "model.pt")
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ckpt_dir)))
    else:
        ray.train.report(metrics)


def train_on_ray(cfg, videos: Sequence[TrainVideo], blob_store, *, cluster: RayClusterSpec,
                 storage_dir: str | Path, name: str = "sam2-finetune",
                 threads_per_worker: int = 1) -> RayTrainResult:
    """Fine-tune SAM 2 (``cfg``: a ``models.sam2.train.TrainConfig`` whose ``init_checkpoint`` is
    the production checkpoint) on ``videos`` with Ray Train. The checkpoint goes to ``blob_store``."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    started = time.time()
    if cfg.image_budget_s is not None or cfg.video_budget_s is not None:
        raise ValueError("distributed training needs step counts, not wall-clock budgets")
    payload = [(v.name, np.ascontiguousarray(v.frames), np.ascontiguousarray(v.masks, dtype=bool))
               for v in videos]
    use_gpu = cluster.gpu_per_worker > 0
    resources = {"CPU": cluster.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = cluster.gpu_per_worker
    storage_dir = Path(storage_dir).resolve()
    storage_dir.mkdir(parents=True, exist_ok=True)
    with ray_session(cluster):
        trainer = TorchTrainer(
            _train_loop,
            train_loop_config={"cfg": asdict(cfg), "videos": payload, "threads": threads_per_worker},
            scaling_config=ScalingConfig(num_workers=cluster.num_workers, use_gpu=use_gpu,
                                         resources_per_worker=resources),
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            run_config=RunConfig(name=name, storage_path=str(storage_dir)),
        )
        result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"Ray Train run {name} produced no checkpoint (error: {result.error})")
    local = storage_dir / f"{name}.pt"
    with result.checkpoint.as_directory() as d:
        shutil.copy(Path(d) / "model.pt", local)
    key = blob_store.put_file(local)
    metrics = dict(result.metrics or {})
    metrics["workers"] = cluster.num_workers
    metrics["train_videos"] = len(videos)
    metrics["seconds"] = round(time.time() - started, 1)
    return RayTrainResult(checkpoint_key=key, checkpoint_path=local, metrics=metrics,
                          seconds=metrics["seconds"])
