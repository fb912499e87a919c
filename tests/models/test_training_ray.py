"""Ray Train fine-tuning of SAM 2 with 2 data-parallel workers on the CPU (gloo), real local Ray
cluster, checkpoint into the blob store. No mocks."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("ray.train.torch")


@pytest.mark.slow
@pytest.mark.sam2
def test_ray_train_two_workers_fine_tunes_and_stores_checkpoint(tmp_path):
    from models.sam2 import BASE_CHECKPOINT
    from models.sam2.build import read_state_dict
    from models.sam2.train import TrainConfig
    from models.training import RayClusterSpec, TrainVideo, train_on_ray
    from storage.blobs import LocalBlobStore
    from storage.synthetic.videos import generate_videos

    blobs = LocalBlobStore(tmp_path / "blobs")
    vids = [TrainVideo(v.name, v.frames, v.masks)
            for v in generate_videos(4242, 4, domain="target", frames=8, objects=2)]
    cfg = TrainConfig(init_checkpoint=str(BASE_CHECKPOINT), seed=77, pool_size=8, video_frames=8,
                      image_steps=3, image_batch=2, video_steps=2, clips_per_step=1, clip_frames=4,
                      warmup_steps=1, val_videos=1, val_every=10_000, checkpoint_every=10_000,
                      log_every=1, balance_memory=False, threads=1)
    started = time.time()
    res = train_on_ray(cfg, vids, blobs, storage_dir=tmp_path / "ray",
                       cluster=RayClusterSpec(address="local", num_cpus=2, num_workers=2))
    print(f"ray train 2 workers: {time.time() - started:.1f} s, metrics {res.metrics}")
    assert res.metrics["world"] == 2 and res.metrics["workers"] == 2
    assert res.metrics["steps"] == {"image": 3, "video": 2}
    assert blobs.exists(res.checkpoint_key)
    sd, meta = read_state_dict(blobs.path(res.checkpoint_key))
    base, _ = read_state_dict(BASE_CHECKPOINT)
    changed = [k for k in sd if k in base and not np.allclose(sd[k].numpy(), base[k].numpy())]
    assert changed, "fine-tuning changed no weight"
