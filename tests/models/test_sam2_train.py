"""The trainer drives SAM2Base end to end: both stages run, losses are finite, the checkpoint it
writes loads back into a predictor, and a few steps on one fixed batch reduce the loss (it learns)."""
import math

import numpy as np
import pytest
import torch

from models.sam2.build import build_sam2, read_state_dict
from models.sam2.losses import LossWeights, dice_loss, focal_loss, hard_iou, mask_losses
from models.sam2.train import Sam2Trainer, TrainConfig, lr_at

pytestmark = pytest.mark.sam2


def small_cfg(tmp_path, **kw) -> TrainConfig:
    base = dict(out_dir=str(tmp_path / "train"), pool_size=6, pool_refresh=1, image_steps=2,
                image_batch=4, video_steps=2, clips_per_step=1, clip_frames=3, video_frames=6,
                val_videos=1, val_every=1000, checkpoint_every=1000, log_every=1, threads=1,
                warmup_steps=1)
    base.update(kw)
    return TrainConfig(**base)


def test_both_stages_run_and_checkpoint_loads(tmp_path):
    records = []
    final = Sam2Trainer(small_cfg(tmp_path), progress=records.append).train()
    losses = [r["loss"] for r in records if "loss" in r]
    assert {r.get("stage") for r in records if "loss" in r} == {"image", "video"}
    assert losses and all(math.isfinite(x) for x in losses)
    state, meta = read_state_dict(final)
    assert meta["steps"] == {"image": 2, "video": 2}
    assert meta["config"] == "dataengine_s128"
    predictor = build_sam2("dataengine_s128", final, predictor=True, device="cpu")
    restored = {k: v for k, v in predictor.state_dict().items()}
    assert all(torch.equal(restored[k], v) for k, v in state.items())


def test_image_stage_overfits_one_batch(tmp_path):
    """Repeating one batch must drive its loss down: the gradient reaches the mask decoder
    (an untrained object score would hide the masks behind torch.where and stall this)."""
    tr = Sam2Trainer(small_cfg(tmp_path, correction_prob=0.0), progress=None)
    torch.manual_seed(0)
    tr.rng = np.random.default_rng(0)
    imgs, masks = tr._sample_frames(4)
    tr._sample_frames = lambda n: (imgs, masks)
    opt = torch.optim.AdamW(tr.model.parameters(), lr=3e-3)
    first = last = None
    for _ in range(12):
        tr.rng = np.random.default_rng(0)  # same prompts every step
        loss, _ = tr.image_step()
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(loss) if first is None else first
        last = float(loss)
    assert last < 0.7 * first


def test_losses_on_known_masks():
    tgt = torch.zeros(2, 1, 8, 8)
    tgt[0, 0, 2:6, 2:6] = 1
    perfect = tgt * 40 - 20
    assert float(dice_loss(perfect[:1], tgt[:1])) < 1e-3
    assert float(focal_loss(perfect, tgt).max()) < 1e-6
    assert hard_iou(perfect, tgt).tolist() == [1.0, 1.0]  # empty vs empty counts as a match
    wrong = -perfect
    total, stats = mask_losses(wrong, torch.ones(2, 1), torch.full((2, 1), 5.0), tgt, LossWeights())
    # Only the present object counts for mask losses; the absent one is trained by its score.
    assert stats["train_iou"] == 0.0 and stats["obj"] > 1.0
    assert float(total) > 10


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(s, 100, 1.0, 10, 0.05) for s in range(100)]
    assert lrs[0] < lrs[9] <= 1.0
    assert lrs[10] > lrs[50] > lrs[99] >= 0.05
