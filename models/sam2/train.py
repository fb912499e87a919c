"""Train a SAM 2 model the way SAM 2's own trainer drives `SAM2Base`, on synthetic videos.

Two stages, as SAM 2 itself was trained (and as was found to be needed on 2 CPU cores, docs/sam2.md):
1. image-level: single frames with one box or one point prompt (plus, at random, one correction
   click fed back with the previous mask logits, which is what interactive refinement needs);
2. video: clips with memory; the first frame is prompted with a mask, a box or a point, every later
   frame is tracked from memory; at random one later frame gets a correction click.
Losses: focal + dice + IoU-prediction L1 + object-score BCE (models/sam2/losses.py), the object
score trained from the first step (an untrained score hides every mask behind `torch.where`).

The same loop fine-tunes an existing checkpoint on a list of corrected videos (`extra_videos`),
mixing in replay of the pre-training domain; the data engine's retraining calls it that way.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from sam2.modeling.sam2_utils import get_next_point, sample_box_points
from sam2.utils.misc import concat_points

from models.sam2.build import build_sam2, count_parameters, save_checkpoint
from models.sam2.losses import LossWeights, hard_iou, mask_losses
from models.sam2.predict import IMAGENET_MEAN, IMAGENET_STD
from storage.synthetic.videos import SyntheticVideo, generate_video, video_seed

MIN_OBJECT_AREA = 16  # pixels; smaller slivers are not prompted (a person would not prompt them)


@dataclass
class TrainConfig:
    config: str = "dataengine_s128"
    out_dir: str = ".work/train/sam2"
    init_checkpoint: str | None = None
    seed: int = 1000  # dataset seed of the training videos (evaluation seeds are drawn apart)
    domain: str = "base"
    image_size: int = 128
    video_frames: int = 24
    max_objects: int = 3
    difficulty: float = 1.0
    # Share of objects (after the first) that swing out of the frame and come back. The training
    # pool may show exits more often than the evaluation videos do (their default, 0.25): an
    # object that leaves and its neighbour's mask taking its place is the commonest tracking
    # failure left (docs/sam2.md); 0.5 did not fix it in one 80-minute run (MODEL_CARD.md), so the
    # shipped model keeps the default. Validation videos keep it too, so runs stay comparable.
    leave_prob: float = 0.25
    pool_size: int = 240
    pool_refresh: int = 2  # videos replaced in the pool per step (fresh data, bounded memory)
    image_steps: int = 1700
    image_batch: int = 8  # frames; every object on each is one sample (~3.5 per frame)
    image_lr: float = 2e-3  # 3e-3 stalled on crowded frames (docs/sam2.md)
    video_steps: int = 1200
    clips_per_step: int = 4
    clip_frames: int = 8
    video_lr: float = 1e-3
    # Optional wall-clock budgets (seconds) per stage: the LR schedule then follows elapsed time and
    # the stage stops when its budget is spent; the steps reached are logged in the checkpoint.
    image_budget_s: float | None = None
    video_budget_s: float | None = None
    weight_decay: float = 0.05
    warmup_steps: int = 200
    min_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    correction_prob: float = 0.5
    video_prompt_probs: tuple[float, float, float] = (0.4, 0.3, 0.3)  # mask, box, point
    threads: int = 2
    log_every: int = 25
    val_every: int = 250
    val_videos: int = 8
    checkpoint_every: int = 250
    replay_fraction: float = 0.25  # with extra_videos: share of base-domain replay samples
    # Image-stage frames come from their own pool of short videos with MORE objects than the
    # video stage: with 1-3 objects, segmenting 'whatever is salient' was a shortcut that kept the
    # decoder from ever using its prompt (docs/sam2.md); crowded frames take that shortcut away.
    image_objects: tuple[int, int] = (2, 5)  # what the shipped model was trained with
    image_pool_size: int = 160
    # The memory path (memory encoder + attention, object pointers) learns this much faster than
    # the rest in the video stage: its gradients are small next to the image encoder's.
    memory_lr_mult: float = 3.0
    # At the start of the video stage, scale the memory encoder's image projection so that the
    # image and the mask contribute comparably to a memory (see balance_memory_encoder).
    balance_memory: bool = True
    # Keep the neck's stride-16 output (what prompts, memory and the decoder's attention meet) at
    # RMS ~`feature_rms_target`: a penalty on the excess, from the first step. Without it image
    # training grew those features to mean |x| ~100 and point, box, mask and memory inputs (all
    # O(1)) stopped mattering: the model segmented the salient object whatever it was asked
    # (docs/sam2.md). 0 turns it off.
    feature_rms_weight: float = 1.0
    feature_rms_target: float = 1.0
    weights: dict = field(default_factory=lambda: asdict(LossWeights()))

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Refuse clip settings the videos cannot serve, where the config is made (before a Ray
        cluster starts) and again in the trainer (fields may have been changed since)."""
        if not 2 <= self.clip_frames <= self.video_frames:
            raise ValueError(f"clip_frames must be between 2 and video_frames ({self.video_frames}), "
                             f"got {self.clip_frames}")
        if self.clips_per_step < 1:
            raise ValueError(f"clips_per_step must be >= 1, got {self.clips_per_step}")
        if not 0.0 <= self.leave_prob <= 1.0:
            raise ValueError(f"leave_prob must be between 0 and 1, got {self.leave_prob}")


def normalize_frames(frames_uint8: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] -> float [N,3,H,W] with SAM 2's ImageNet normalisation (the predictor's)."""
    x = torch.from_numpy(np.ascontiguousarray(frames_uint8)).permute(0, 3, 1, 2).float() / 255.0
    return (x - IMAGENET_MEAN) / IMAGENET_STD


class VideoPool:
    """A rolling pool of training videos: synthetic ones regenerated as training goes, plus any
    fixed videos (corrected masklets from annotation rounds) that are always kept."""

    def __init__(self, cfg: TrainConfig, extra_videos: list[SyntheticVideo] | None = None,
                 objects: tuple[int, int] | None = None, frames: int | None = None,
                 size: int | None = None, stream: int = 0):
        self.cfg = cfg
        self.objects = objects or (1, cfg.max_objects)
        self.frames = frames or cfg.video_frames
        self.stream = stream  # distinct pools draw distinct videos from the same dataset seed
        self.rng = np.random.default_rng([cfg.seed, 17, stream])
        self.next_index = 0
        self.synthetic: list[SyntheticVideo] = []
        pool_size = size or cfg.pool_size
        n_syn = pool_size if not extra_videos else max(8, int(pool_size * cfg.replay_fraction))
        for _ in range(n_syn):
            self.synthetic.append(self._make())
        self.extra = list(extra_videos or [])

    def _make(self) -> SyntheticVideo:
        vs = video_seed(self.cfg.seed + 1_000_003 * self.stream, self.next_index)
        self.next_index += 1
        lo, hi = self.objects
        n_obj = int(np.random.default_rng([vs, 5]).integers(lo, hi + 1))
        return generate_video(vs, domain=self.cfg.domain, size=self.cfg.image_size,
                              frames=self.frames, objects=n_obj,
                              difficulty=self.cfg.difficulty, leave_prob=self.cfg.leave_prob)

    def refresh(self) -> None:
        for _ in range(self.cfg.pool_refresh):
            self.synthetic[int(self.rng.integers(len(self.synthetic)))] = self._make()

    def pick(self) -> SyntheticVideo:
        if self.extra and self.rng.random() >= self.cfg.replay_fraction:
            return self.extra[int(self.rng.integers(len(self.extra)))]
        return self.synthetic[int(self.rng.integers(len(self.synthetic)))]


def lr_at(step: int, total: int, base: float, warmup: int, min_ratio: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _empty_output_dict() -> dict:
    return {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}


def _point_prompt(masks: torch.Tensor, kind: str) -> dict:
    """masks: bool [B,1,H,W] -> SAM 2 point_inputs (box as two corner points, or one click)."""
    if kind == "box":
        pts, lbl = sample_box_points(masks, noise=0.1, noise_bound=5)
    else:
        pts, lbl = get_next_point(gt_masks=masks, pred_masks=None, method="uniform")
    return {"point_coords": pts, "point_labels": lbl}


class Sam2Trainer:
    def __init__(self, cfg: TrainConfig, extra_videos: list[SyntheticVideo] | None = None,
                 progress: Callable[[dict], None] | None = None):
        cfg.check()
        self.cfg = cfg
        torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.rng = np.random.default_rng([cfg.seed, 3])
        self.model = build_sam2(cfg.config, cfg.init_checkpoint, device="cpu", predictor=False,
                                mode="train")
        self.weights = LossWeights(**cfg.weights)
        self.pool = VideoPool(cfg, extra_videos)
        self.image_pool = (VideoPool(cfg, extra_videos, objects=tuple(cfg.image_objects), frames=4,
                                     size=cfg.image_pool_size, stream=1)
                           if cfg.image_steps else None)
        self.out_dir = Path(cfg.out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.out_dir / "train_log.jsonl"
        self.progress = progress
        self.started = time.time()
        self.steps_done: dict[str, int] = {}
        self.aux_losses: list[torch.Tensor] = []  # regularisers collected during one step's forward
        self.last_feature_rms: float | None = None
        self.feature_rms_target = cfg.feature_rms_target
        if cfg.init_checkpoint and cfg.feature_rms_weight:
            # Fine-tuning holds the features at the scale the checkpoint has (an older checkpoint
            # may sit far above the target; pulling it down would undo what it learned).
            self.feature_rms_target = max(cfg.feature_rms_target, self._feature_rms())
        self.val_set = [
            generate_video(video_seed(cfg.seed + 7_919_000, i), domain=cfg.domain,
                           size=cfg.image_size, frames=cfg.video_frames,
                           objects=1 + i % cfg.max_objects, difficulty=cfg.difficulty)
            for i in range(cfg.val_videos)
        ]

    # ---- logging --------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        record = {"t": round(time.time() - self.started, 1), **record}
        with self.log_path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.progress:
            self.progress(record)

    # ---- image stage ----------------------------------------------------------------------
    def _sample_frames(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """`n` frames and EVERY object on them (each object one sample sharing its frame's
        features), as SAM 2's trainer does. One object per frame let a shortcut win: on frames
        with one dominant object, 'segment the salient object' scores well whatever the prompt,
        and the decoder learned to ignore prompts (the output moved by <0.1 logit when the
        prompt moved to another object). Several objects of the same frame in one batch make the
        prompt the only way to lower the loss. Returns frames [n,H,W,3], masks [B,H,W],
        obj_frame [B] (the frame of each object)."""
        imgs, masks, obj_frame = [], [], []
        pool = self.image_pool or self.pool
        while len(imgs) < n:
            v = pool.pick()
            t = int(self.rng.integers(v.num_frames))
            areas = v.masks[t].reshape(v.masks.shape[1], -1).sum(1)
            ok = np.flatnonzero(areas >= MIN_OBJECT_AREA)
            if len(ok) == 0:
                continue
            frame, obj = v.frames[t], v.masks[t, ok]
            if self.rng.random() < 0.5:
                frame, obj = frame[:, ::-1], obj[:, :, ::-1]
            for mask in obj:
                masks.append(mask)
                obj_frame.append(len(imgs))
            imgs.append(frame)
        return np.stack(imgs), np.stack(masks), np.asarray(obj_frame, dtype=np.int64)

    def _features(self, imgs: torch.Tensor):
        backbone_out = self.model.forward_image(imgs)
        _, feats, pos, sizes = self.model._prepare_backbone_features(backbone_out)
        if self.cfg.feature_rms_weight and torch.is_grad_enabled():
            rms = feats[-1].pow(2).mean().sqrt()
            excess = torch.relu(rms - self.feature_rms_target)
            self.aux_losses.append(self.cfg.feature_rms_weight * excess.pow(2))
            self.last_feature_rms = float(rms.detach())
        return feats, pos, sizes

    @torch.no_grad()
    def _feature_rms(self) -> float:
        frames, _, _ = self._sample_clips()
        feats, _, _ = self._features(normalize_frames(frames[:, 0]))  # no grad: no penalty added
        return float(feats[-1].pow(2).mean().sqrt())

    def _with_aux(self, loss: torch.Tensor, stats: dict) -> tuple[torch.Tensor, dict]:
        """Add the regularisers collected during this step's forward (see `_features`)."""
        if self.aux_losses:
            loss = loss + torch.stack(self.aux_losses).sum()
            stats["feature_rms"] = round(self.last_feature_rms, 3)
        self.aux_losses = []
        return loss, stats

    def image_step(self) -> tuple[torch.Tensor, dict]:
        m = self.model
        self.aux_losses = []
        imgs_np, masks_np, obj_frame = self._sample_frames(self.cfg.image_batch)
        imgs = normalize_frames(imgs_np)
        gt = torch.from_numpy(masks_np[:, None].copy())
        target = gt.float()
        feats, pos, sizes = self._features(imgs)
        ids = torch.from_numpy(obj_frame)
        feats, pos = [x[:, ids] for x in feats], [x[:, ids] for x in pos]
        kind = "box" if self.rng.random() < 0.5 else "point"
        points = _point_prompt(gt, kind)
        _, sam_out, high_res_feats, pix_feat = m._track_step(
            0, True, feats, pos, sizes, points, None, _empty_output_dict(), 1, False, None)
        low, high, ious, obj = sam_out[3], sam_out[4], sam_out[2], sam_out[6]
        loss, stats = mask_losses(high, ious, obj, target, self.weights)
        if self.rng.random() < self.cfg.correction_prob:
            new_pts, new_lbl = get_next_point(gt_masks=gt, pred_masks=high.detach() > 0,
                                              method="uniform")
            points2 = concat_points(points, new_pts, new_lbl)
            out2 = m._forward_sam_heads(pix_feat, points2, low, high_res_feats, False)
            loss2, stats2 = mask_losses(out2[4], out2[2], out2[6], target, self.weights)
            loss = 0.5 * (loss + loss2)
            stats["corr_iou"] = stats2.get("train_iou")
        stats["prompt"] = kind
        stats["objects"] = int(gt.shape[0])
        return self._with_aux(loss, stats)

    # ---- video stage ----------------------------------------------------------------------
    def _sample_clips(self):
        cfg = self.cfg
        frames, obj_masks, obj_clip = [], [], []
        for c in range(cfg.clips_per_step):
            for _ in range(20):
                v = self.pool.pick()
                start = int(self.rng.integers(0, v.num_frames - cfg.clip_frames + 1))
                clip_m = v.masks[start:start + cfg.clip_frames]
                areas0 = clip_m[0].reshape(clip_m.shape[1], -1).sum(1)
                keep = np.flatnonzero(areas0 >= MIN_OBJECT_AREA)
                if len(keep):
                    break
            clip_f = v.frames[start:start + cfg.clip_frames]
            if self.rng.random() < 0.5:
                clip_f, clip_m = clip_f[:, :, ::-1], clip_m[:, :, :, ::-1]
            if self.rng.random() < 0.3:  # time reversal: objects leave instead of entering
                clip_f, clip_m = clip_f[::-1], clip_m[::-1]
                areas0 = clip_m[0].reshape(clip_m.shape[1], -1).sum(1)
                keep = np.flatnonzero(areas0 >= MIN_OBJECT_AREA)
                if not len(keep):
                    clip_f, clip_m = clip_f[::-1], clip_m[::-1]
                    keep = np.flatnonzero(clip_m[0].reshape(clip_m.shape[1], -1).sum(1) >= MIN_OBJECT_AREA)
            frames.append(np.ascontiguousarray(clip_f))
            for k in keep:
                obj_masks.append(np.ascontiguousarray(clip_m[:, k]))
                obj_clip.append(c)
        return np.stack(frames), np.stack(obj_masks), np.array(obj_clip)

    def run_clip(self, frames: np.ndarray, gt_masks: np.ndarray, obj_clip: np.ndarray,
                 prompt: str, correct_frame: int | None = None, train: bool = True):
        """Track every object of a batch of clips. frames uint8 [C,L,H,W,3], gt bool [B,L,H,W].
        Returns per-frame (high_res_logits [B,1,H,W], ious [B,1], obj_logits [B,1])."""
        m = self.model
        n_clips, length = frames.shape[:2]
        imgs = normalize_frames(frames.reshape(-1, *frames.shape[2:]))
        feats, pos, sizes = self._features(imgs)
        gt = torch.from_numpy(gt_masks[:, :, None].copy())  # [B,L,1,H,W]
        output_dict = _empty_output_dict()
        outs = []
        for t in range(length):
            ids = torch.from_numpy(obj_clip * length + t)
            cur_feats = [x[:, ids] for x in feats]
            cur_pos = [x[:, ids] for x in pos]
            point_inputs = mask_inputs = None
            if t == 0:
                if prompt == "mask":
                    mask_inputs = gt[:, 0].float()
                else:
                    point_inputs = _point_prompt(gt[:, 0], prompt)
            current_out, sam_out, hr_feats, pix_feat = m._track_step(
                t, t == 0, cur_feats, cur_pos, sizes, point_inputs, mask_inputs, output_dict,
                length, False, None)
            low, high, ious, obj_ptr, obj = sam_out[3], sam_out[4], sam_out[2], sam_out[5], sam_out[6]
            frame_outs = [(high, ious, obj, t == 0 and prompt == "mask")]
            if correct_frame is not None and t == correct_frame:
                new_pts, new_lbl = get_next_point(gt_masks=gt[:, t], pred_masks=high.detach() > 0,
                                                  method="uniform")
                point_inputs = concat_points(point_inputs, new_pts, new_lbl)
                sam_out = m._forward_sam_heads(pix_feat, point_inputs, low, hr_feats, False)
                low, high, ious, obj_ptr, obj = sam_out[3], sam_out[4], sam_out[2], sam_out[5], sam_out[6]
                frame_outs.append((high, ious, obj, False))
            current_out["pred_masks"] = low
            current_out["pred_masks_high_res"] = high
            current_out["obj_ptr"] = obj_ptr
            m._encode_memory_in_output(cur_feats, sizes, point_inputs, True, high, obj, current_out)
            key = "cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"
            output_dict[key][t] = current_out
            outs.append(frame_outs)
        return outs, gt

    def video_step(self) -> tuple[torch.Tensor, dict]:
        self.aux_losses = []
        frames, gt_masks, obj_clip = self._sample_clips()
        probs = np.array(self.cfg.video_prompt_probs, dtype=float)
        prompt = str(self.rng.choice(["mask", "box", "point"], p=probs / probs.sum()))
        correct = None
        if self.rng.random() < self.cfg.correction_prob:
            correct = int(self.rng.integers(1, self.cfg.clip_frames))
        outs, gt = self.run_clip(frames, gt_masks, obj_clip, prompt, correct)
        losses, ious = [], []
        for t, frame_outs in enumerate(outs):
            for high, pious, obj, is_given in frame_outs:
                if is_given:
                    continue  # the prompt mask itself is the output: nothing to learn there
                loss, stats = mask_losses(high, pious, obj, gt[:, t].float(), self.weights)
                losses.append(loss)
                if "train_iou" in stats and t > 0:
                    ious.append(stats["train_iou"])
        total = torch.stack(losses).mean()
        return self._with_aux(total, {"prompt": prompt, "objects": int(gt.shape[0]),
                                      "track_iou": float(np.mean(ious)) if ious else None})

    @torch.no_grad()
    def balance_backbone_scale(self, target: float = 1.0) -> float | None:
        """Rescale the neck's stride-16 output (the features that memory attention, the memory
        encoder and the decoder's prompt path consume) to mean |x| ~ `target`.

        Image-level training lets these features grow to mean |x| ~100, while memory attention
        adds O(1) updates to them: memory then cannot move them and tracking ignores the prompt.
        Scaling the two neck convolutions that sum into that level (the stride-32 one feeds it
        top-down) changes nothing else: the high-resolution levels the decoder also reads are
        separate convolutions."""
        neck = self.model.image_encoder.neck
        frames, _, _ = self._sample_clips()
        imgs = normalize_frames(frames[:, 0])
        feats, _, _ = self._features(imgs)
        mag = float(feats[-1].abs().mean())
        if mag <= 2 * target:
            return None
        factor = target / mag
        n = len(neck.convs) - 1
        top_down = [lvl for lvl in getattr(neck, "fpn_top_down_levels", [n - 1, n])]
        # convs[n - level] produces the lateral features of backbone level `level`.
        for level in sorted(set([n - 1] + [l for l in top_down if l >= n - 1])):
            conv = neck.convs[n - level].conv
            conv.weight.mul_(factor)
            if conv.bias is not None:
                conv.bias.mul_(factor)
        return factor

    @torch.no_grad()
    def balance_memory_encoder(self, ratio: float = 1.0) -> float | None:
        """Rescale `memory_encoder.pix_feat_proj` so its output is `ratio` times the mask
        embedding's magnitude. After image-level training the backbone features are large (mean
        |x| ~100 here), so a memory is 98% image and 2% mask: it cannot tell objects apart and
        video training never learns to track (masks came out identical whichever object was
        prompted). The projection's direction is kept; only its scale changes."""
        me = self.model.memory_encoder
        frames, gt_masks, obj_clip = self._sample_clips()
        imgs = normalize_frames(frames[:, 0])
        feats, _, sizes = self._features(imgs)
        h, w = sizes[-1]
        pix = feats[-1].permute(1, 2, 0).reshape(imgs.shape[0], -1, h, w)[torch.from_numpy(obj_clip)]
        masks = torch.from_numpy(gt_masks[:, :1].copy()).float()
        masks = masks * self.model.sigmoid_scale_for_mem_enc + self.model.sigmoid_bias_for_mem_enc
        pix_mag = float(me.pix_feat_proj(pix).abs().mean())
        mask_mag = float(me.mask_downsampler(masks).abs().mean())
        if pix_mag <= ratio * mask_mag:
            return None
        factor = ratio * mask_mag / pix_mag
        me.pix_feat_proj.weight.mul_(factor)
        if me.pix_feat_proj.bias is not None:
            me.pix_feat_proj.bias.mul_(factor)
        return factor

    @torch.no_grad()
    def balance_memory_attention(self, ratio: float = 0.5) -> list[float]:
        """Scale each memory-attention layer's cross-attention output projection so that what it
        adds to the current frame's features is `ratio` times their magnitude. The current
        features enter the residual stream at the backbone's scale (~100 after image training)
        while the cross-attention adds O(1): memory then moves the features by ~0.1% and the
        decoder cannot see which object it is tracking."""
        ma = self.model.memory_attention
        frames, gt_masks, obj_clip = self._sample_clips()
        captured: list[tuple[float, float]] = []

        def hook(layer):
            def fn(module, args, kwargs, output):
                captured.append((float(kwargs["q"].abs().mean()), float(output.abs().mean())))
            return fn

        tgt_mags: list[float] = []

        def layer_hook(module, args, kwargs):
            tgt_mags.append(float(kwargs.get("tgt", args[0] if args else None).abs().mean()))

        handles = [layer.cross_attn_image.register_forward_hook(hook(layer), with_kwargs=True)
                   for layer in ma.layers]
        handles += [layer.register_forward_pre_hook(layer_hook, with_kwargs=True) for layer in ma.layers]
        try:
            self.model.eval()
            self.run_clip(frames[:, :2], np.ascontiguousarray(gt_masks[:, :2]), obj_clip, "mask", None, train=False)
        finally:
            self.model.train()
            for h in handles:
                h.remove()
        factors = []
        n = len(ma.layers)
        for i, layer in enumerate(ma.layers):
            tgt = np.mean(tgt_mags[i::n]) if tgt_mags else 1.0
            out = np.mean([c[1] for c in captured[i::n]]) if captured else 1.0
            factor = float(ratio * tgt / max(out, 1e-6))
            if factor > 1.0:
                layer.cross_attn_image.out_proj.weight.mul_(factor)
                layer.cross_attn_image.out_proj.bias.mul_(factor)
            factors.append(round(factor, 3))
        return factors

    # ---- validation -----------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Mean J over frames 1..T-1 with a first-frame mask (and box) prompt on held-out videos."""
        self.model.eval()
        res = {}
        for prompt in ("mask", "box"):
            js = []
            for v in self.val_set:
                areas0 = v.masks[0].reshape(v.masks.shape[1], -1).sum(1)
                keep = np.flatnonzero(areas0 >= MIN_OBJECT_AREA)
                if not len(keep):
                    continue
                outs, gt = self.run_clip(v.frames[None], np.ascontiguousarray(v.masks[:, keep].transpose(1, 0, 2, 3)),
                                         np.zeros(len(keep), dtype=np.int64), prompt, None, train=False)
                for t in range(1, len(outs)):
                    high = outs[t][-1][0]
                    js.extend(hard_iou(high, gt[:, t].float()).tolist())
            res[f"val_j_{prompt}"] = float(np.mean(js)) if js else float("nan")
        self.model.train()
        return res

    # ---- loop -----------------------------------------------------------------------------
    def _run_stage(self, name: str, steps: int, lr: float, step_fn, budget_s: float | None = None) -> int:
        cfg = self.cfg
        params = [p for p in self.model.parameters() if p.requires_grad]
        memory_prefixes = ("memory_encoder.", "memory_attention.", "obj_ptr_proj.", "obj_ptr_tpos_proj.",
                           "maskmem_tpos_enc", "no_obj_embed_spatial", "no_obj_ptr")
        mult = cfg.memory_lr_mult if name == "video" else 1.0
        memory = [p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith(memory_prefixes)]
        memory_ids = {id(p) for p in memory}
        rest = [p for p in params if id(p) not in memory_ids]
        opt = torch.optim.AdamW([{"params": rest, "lr_mult": 1.0}, {"params": memory, "lr_mult": mult}],
                                lr=lr, weight_decay=cfg.weight_decay)
        stage_start = time.time()
        step = 0
        while True:
            if budget_s is not None:
                frac = (time.time() - stage_start) / budget_s
                if frac >= 1.0:
                    break
                # Map elapsed time onto the step-based schedule (same warm-up and cosine shape).
                virtual_total = max(steps, cfg.warmup_steps + 1)
                sched_step = max(step, int(frac * virtual_total)) if step >= cfg.warmup_steps else step
                last = False
            else:
                if step >= steps:
                    break
                virtual_total, sched_step = steps, step
                last = step == steps - 1
            for g in opt.param_groups:
                g["lr"] = g["lr_mult"] * lr_at(sched_step, virtual_total, lr, cfg.warmup_steps, cfg.min_lr_ratio)
            t0 = time.time()
            loss, stats = step_fn()
            loss_value = float(loss.detach())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            (self.image_pool if name == "image" and self.image_pool else self.pool).refresh()
            if step % cfg.log_every == 0 or last:
                self.log({"stage": name, "step": step, "loss": round(loss_value, 4),
                          "lr": opt.param_groups[0]["lr"], "step_s": round(time.time() - t0, 3),
                          **stats})
            if (step + 1) % cfg.val_every == 0 or last:
                self.log({"stage": name, "step": step, **self.validate()})
            if (step + 1) % cfg.checkpoint_every == 0 or last:
                self.save(self.out_dir / "last.pt", stage=name, step=step)
            step += 1
        self.steps_done[name] = step
        if budget_s is not None:  # the budget ended the stage: validate and keep what it reached
            self.log({"stage": name, "step": step, **self.validate()})
            self.save(self.out_dir / "last.pt", stage=name, step=step)
        return step

    def save(self, path: Path, **meta) -> str:
        return save_checkpoint(self.model, path, {
            "config": self.cfg.config, "train_config": asdict(self.cfg),
            "wall_clock_s": round(time.time() - self.started, 1), **meta})

    def train(self) -> Path:
        self.log({"event": "start", "params": count_parameters(self.model), "config": asdict(self.cfg)})
        if self.cfg.image_steps:
            self._run_stage("image", self.cfg.image_steps, self.cfg.image_lr, self.image_step,
                            self.cfg.image_budget_s)
        if self.cfg.video_steps:
            if self.cfg.balance_memory:
                backbone = self.balance_backbone_scale()
                factor = self.balance_memory_encoder()
                attn = self.balance_memory_attention()
                self.log({"event": "balance_memory", "backbone_factor": backbone,
                          "encoder_factor": factor, "attention_factors": attn})
            self._run_stage("video", self.cfg.video_steps, self.cfg.video_lr, self.video_step,
                            self.cfg.video_budget_s)
        final = self.out_dir / "final.pt"
        sha = self.save(final, stage="done", steps=self.steps_done)
        self.log({"event": "done", "checkpoint": str(final), "sha256": sha,
                  "wall_clock_s": round(time.time() - self.started, 1)})
        return final


def train_sam2(cfg: TrainConfig, extra_videos: Iterable[SyntheticVideo] | None = None,
               progress: Callable[[dict], None] | None = None) -> Path:
    return Sam2Trainer(cfg, list(extra_videos or []), progress).train()
