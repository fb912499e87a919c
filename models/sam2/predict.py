"""A thin, streaming API over sam2's own `SAM2VideoPredictor`.

What this adds to the official predictor, and nothing more:
- frames come from memory or any decoder (not only JPEG folders / mp4 paths), resized and
  normalised lazily, one frame at a time, so a long video costs one uint8 copy at model resolution;
- prompts are validated before they reach the model (errors name the object and the frame);
- per-frame predicted IoU and object score are reported with each mask (the data engine ranks
  masklets by them);
- propagation runs forward and then backwards from the earliest prompt, and prunes memory that the
  model can no longer attend to, so state stays bounded on 1,000-frame videos.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
import sam2.sam2_video_predictor as _sam2_video_predictor
from sam2.sam2_video_predictor import SAM2VideoPredictor

from models.sam2.build import Runtime, pick_runtime

# The official predictor wraps propagation in its own tqdm bar; callers here report progress per
# video with their own bars, and a bar per object-pass would flood logs of scheduled runs.
_sam2_video_predictor.tqdm = lambda iterable, *args, **kwargs: iterable

IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


class PromptError(ValueError):
    """A prompt the model cannot use (outside the frame, empty, wrong size, unknown frame)."""


class FrameSource:
    """Frames of one video at the model's input resolution, stored as uint8, normalised on access.

    Behaves like the tensor list `SAM2VideoPredictor` keeps in `inference_state["images"]`.
    """

    def __init__(self, frames: np.ndarray | Sequence[np.ndarray], image_size: int, where: str = "video"):
        if len(frames) == 0:
            raise PromptError(f"{where}: the video has no frames")
        first = np.asarray(frames[0])
        if first.ndim != 3 or first.shape[2] != 3:
            raise PromptError(f"{where}: frames must be HxWx3 uint8, got shape {first.shape}")
        self.video_height, self.video_width = int(first.shape[0]), int(first.shape[1])
        self.image_size = image_size
        stored = np.empty((len(frames), 3, image_size, image_size), dtype=np.uint8)
        for i, fr in enumerate(frames):
            fr = np.asarray(fr)
            if fr.shape != first.shape:
                raise PromptError(
                    f"{where}: frame {i} is {fr.shape[1]}x{fr.shape[0]} but frame 0 is "
                    f"{first.shape[1]}x{first.shape[0]}; all frames of a video must share one size")
            stored[i] = self._resize(fr)
        self._frames = stored

    def _resize(self, frame: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)
        if x.shape[1] != self.image_size or x.shape[2] != self.image_size:
            x = F.interpolate(x[None].float(), size=(self.image_size, self.image_size),
                              mode="bilinear", align_corners=False, antialias=True)[0]
            x = x.round().clamp(0, 255).to(torch.uint8)
        return x.numpy()

    def __len__(self) -> int:
        return int(self._frames.shape[0])

    def __getitem__(self, idx: int) -> torch.Tensor:
        x = torch.from_numpy(self._frames[idx]).float() / 255.0
        return (x - IMAGENET_MEAN) / IMAGENET_STD

    def raw(self, idx: int) -> np.ndarray:
        """The frame at model resolution as uint8 HxWx3 (for the automatic mask generator)."""
        return self._frames[idx].transpose(1, 2, 0)


@dataclass
class Prompt:
    """What a person (or a previous round) gives for one object on one frame: one of mask, box
    (x0, y0, x1, y1 in pixels) or points (N x 2 pixels, labels 1 positive / 0 negative)."""

    object_id: int
    frame_index: int = 0
    mask: np.ndarray | None = None
    box: Sequence[float] | None = None
    points: np.ndarray | None = None
    labels: np.ndarray | None = None


@dataclass
class FrameResult:
    frame_index: int
    object_ids: list[int]
    masks: np.ndarray  # bool [O, H, W] at the video's resolution
    pred_iou: np.ndarray  # float [O]
    object_score: np.ndarray  # float [O] (logits; > 0 means the object is judged present)


class ScoredVideoPredictor(SAM2VideoPredictor):
    """The official predictor, keeping the IoU head's estimate with each frame's output."""

    def _forward_sam_heads(self, *args, **kwargs):
        out = super()._forward_sam_heads(*args, **kwargs)
        self._last_ious = out[2]
        return out

    def _run_single_frame_inference(self, *args, **kwargs):
        self._last_ious = None
        compact, pred_masks = super()._run_single_frame_inference(*args, **kwargs)
        kw_mask = kwargs.get("mask_inputs")
        if kw_mask is not None or self._last_ious is None:
            compact["pred_iou"] = torch.ones(pred_masks.shape[0], 1)
        else:
            compact["pred_iou"] = self._last_ious.detach().float().cpu()
        compact["maskmem_features"] = self._widen_memory(compact["maskmem_features"])
        return compact, pred_masks

    def _run_memory_encoder(self, *args, **kwargs):
        maskmem_features, maskmem_pos_enc = super()._run_memory_encoder(*args, **kwargs)
        return self._widen_memory(maskmem_features), maskmem_pos_enc

    def _widen_memory(self, feats):
        # sam2 stores memory features as bfloat16 to halve them. Under CUDA autocast that is
        # harmless; without autocast (the CPU) a memory made of such features alone (an object
        # tracked on frames before its own prompt frame: no object pointer yet promotes the
        # concatenation to float32) reaches float32 Linear layers as bf16 and fails. Widening
        # after sam2's rounding keeps exactly the values the official predictor attends to.
        if (feats is not None and feats.dtype == torch.bfloat16
                and not torch.is_autocast_enabled(self.device.type)):
            return feats.float()
        return feats


def validate_prompt(p: Prompt, height: int, width: int, num_frames: int) -> None:
    where = f"object {p.object_id} on frame {p.frame_index}"
    if not 0 <= p.frame_index < num_frames:
        raise PromptError(f"prompt for {where}: the video has {num_frames} frames")
    given = [x is not None for x in (p.mask, p.box, p.points)]
    if sum(given) != 1:
        raise PromptError(f"prompt for {where}: give exactly one of mask, box or points")
    if p.mask is not None:
        m = np.asarray(p.mask)
        if m.shape != (height, width):
            raise PromptError(f"mask prompt for {where} is {m.shape[1]}x{m.shape[0]}, "
                              f"the frame is {width}x{height}")
        if not m.any():
            raise PromptError(f"mask prompt for {where} is empty")
    if p.box is not None:
        x0, y0, x1, y1 = (float(v) for v in p.box)
        if not (x1 > x0 and y1 > y0):
            raise PromptError(f"box prompt for {where} is degenerate: {p.box}")
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise PromptError(f"box prompt for {where} {tuple(p.box)} lies outside the "
                              f"{width}x{height} frame")
    if p.points is not None:
        pts = np.asarray(p.points, dtype=float).reshape(-1, 2)
        if len(pts) == 0:
            raise PromptError(f"point prompt for {where} has no points")
        if (pts[:, 0] < 0).any() or (pts[:, 0] >= width).any() or (pts[:, 1] < 0).any() or (pts[:, 1] >= height).any():
            raise PromptError(f"point prompt for {where} has points outside the {width}x{height} frame")
        labels = np.ones(len(pts)) if p.labels is None else np.asarray(p.labels)
        if labels.shape != (len(pts),):
            raise PromptError(f"point prompt for {where}: {len(pts)} points but {labels.shape} labels")


class VideoSegmenter:
    """Tracks the prompted objects of one video through all its frames."""

    def __init__(self, predictor: SAM2VideoPredictor, runtime: Runtime | None = None,
                 offload_state_to_cpu: bool = True, memory_window: int | None = None):
        self.predictor = predictor
        self.runtime = runtime or pick_runtime(str(predictor.device))
        self.offload_state_to_cpu = offload_state_to_cpu
        # Frames older than this are never attended to again (memory bank + object pointers).
        self.memory_window = memory_window or max(predictor.num_maskmem,
                                                  predictor.max_obj_ptrs_in_encoder) + 1

    @property
    def image_size(self) -> int:
        return int(self.predictor.image_size)

    def frame_source(self, frames, where: str = "video") -> FrameSource:
        if isinstance(frames, FrameSource):
            return frames
        return FrameSource(frames, self.image_size, where)

    def init_state(self, source: FrameSource) -> dict:
        """`SAM2VideoPredictor.init_state`, fed from a FrameSource instead of a JPEG folder."""
        p = self.predictor
        device = p.device
        state = {
            "images": source,
            "num_frames": len(source),
            "offload_video_to_cpu": True,
            "offload_state_to_cpu": self.offload_state_to_cpu,
            "video_height": source.video_height,
            "video_width": source.video_width,
            "device": device,
            "storage_device": torch.device("cpu") if self.offload_state_to_cpu else device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": {},
            "obj_idx_to_id": {},
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }
        from collections import OrderedDict

        state["obj_id_to_idx"] = OrderedDict()
        state["obj_idx_to_id"] = OrderedDict()
        return state

    def _add_prompt(self, state: dict, p: Prompt) -> None:
        pred = self.predictor
        if p.mask is not None:
            pred.add_new_mask(state, p.frame_index, p.object_id, torch.from_numpy(np.asarray(p.mask, dtype=bool)))
        elif p.box is not None:
            pred.add_new_points_or_box(state, p.frame_index, p.object_id,
                                       box=np.asarray(p.box, dtype=np.float32))
        else:
            pts = np.asarray(p.points, dtype=np.float32).reshape(-1, 2)
            labels = np.ones(len(pts), np.int32) if p.labels is None else np.asarray(p.labels, np.int32)
            pred.add_new_points_or_box(state, p.frame_index, p.object_id, points=pts, labels=labels)

    def _scores(self, state: dict, frame_idx: int) -> tuple[np.ndarray, np.ndarray]:
        ious, scores = [], []
        for obj_idx in range(len(state["obj_ids"])):
            od = state["output_dict_per_obj"][obj_idx]
            out = od["cond_frame_outputs"].get(frame_idx) or od["non_cond_frame_outputs"].get(frame_idx)
            if out is None:
                ious.append(np.nan)
                scores.append(np.nan)
                continue
            piou = out.get("pred_iou")
            ious.append(float(piou.reshape(-1)[0]) if piou is not None else np.nan)
            osl = out.get("object_score_logits")
            scores.append(float(osl.reshape(-1)[0]) if osl is not None else np.nan)
        return np.asarray(ious, dtype=np.float32), np.asarray(scores, dtype=np.float32)

    def _prune(self, state: dict, frame_idx: int, reverse: bool) -> None:
        old = frame_idx + self.memory_window if reverse else frame_idx - self.memory_window
        for od in state["output_dict_per_obj"].values():
            od["non_cond_frame_outputs"].pop(old, None)

    def _drop_unreachable_forward(self, state: dict, start: int) -> None:
        # The last window of the forward pass (near the end of the video) is never read by the
        # backward pass, which looks at most a window after each frame it tracks below `start`;
        # left in place it would double the state for the whole backward pass.
        for od in state["output_dict_per_obj"].values():
            outs = od["non_cond_frame_outputs"]
            for t in [t for t in outs if t >= start + self.memory_window]:
                del outs[t]

    def track(self, frames, prompts: Sequence[Prompt], where: str = "video",
              both_directions: bool = True) -> Iterator[FrameResult]:
        """Yield one FrameResult per frame: forward from the earliest prompt to the end, then
        (if any prompt is after frame 0) backwards from it to frame 0."""
        source = self.frame_source(frames, where)
        if not prompts:
            raise PromptError(f"{where}: no prompts given")
        for p in prompts:
            validate_prompt(p, source.video_height, source.video_width, len(source))
        with torch.inference_mode(), self.runtime.autocast():
            state = self.init_state(source)
            for p in prompts:
                self._add_prompt(state, p)
            start = min(p.frame_index for p in prompts)
            directions = [False] + ([True] if both_directions and start > 0 else [])
            for reverse in directions:
                if reverse:
                    self._drop_unreachable_forward(state, start)
                for frame_idx, obj_ids, video_masks in self.predictor.propagate_in_video(
                        state, start_frame_idx=start, reverse=reverse):
                    if reverse and frame_idx == start:
                        continue  # already yielded by the forward pass
                    ious, scores = self._scores(state, frame_idx)
                    masks = (video_masks[:, 0] > 0.0).cpu().numpy()
                    yield FrameResult(frame_idx, list(obj_ids), masks, ious, scores)
                    self._prune(state, frame_idx, reverse)
                # The reverse pass needs memory near the start frame again: rebuilt from the
                # conditioning frames, which are never pruned.
