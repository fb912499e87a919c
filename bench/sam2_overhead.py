"""What the project's SAM 2 wrapper costs over sam2's own predictor, and how fast/large it runs.

(a) ratio: the pre-annotation path (`VideoSegmenter.track` on in-memory frames: resize, prompt
    validation, per-frame scores, memory pruning, bool masks at video size) against sam2's
    `SAM2VideoPredictor` called directly on the same frames written once as a JPEG folder (not
    timed): `init_state(folder)` + `add_new_mask` per object + `propagate_in_video`, each mask
    turned into a bool array as any caller must. Same weights (the direct predictor is the stock
    class loaded with our model's state dict), same autocast, runs interleaved, median of
    --repeats after one warm-up each. ratio = ours / direct (goal <= 1.10).
(b) fps of our path at each --sizes model resolution (random-weight variants of the project
    config: model.image_size and the memory-attention RoPE feat_sizes = size/16); the video is
    size*3/4 x size, --objects objects.
(c) peak RSS (ru_maxrss) tracking one object through each --long frame count, each in a fresh
    subprocess so numbers don't mix; the decoded video (uint8 at --video-size, held in memory as
    pre-annotation holds it) is included and reported apart. sam2's direct path is measured the
    same way for comparison (it loads every frame as float32 and keeps every frame's memory).
(d) with CUDA: the stock `sam2.1_hiera_tiny` config (1024 px) with random weights, bf16 autocast,
    not compiled: frames/s of our path next to SAM 2.1's published 91.2 FPS (tiny, A100, compiled).

Weights: random by default (speed and memory do not depend on what was learned); --checkpoint
uses a trained one. Prints a human summary; with --json the last line is one JSON object:
  ratio, ours_s, direct_s (median wall seconds), ours_runs, direct_runs, ratio_cpu (the same from
  process CPU time: steadier when other jobs share the cores), fps {size: frames/s},
  peak_rss_mb {frames: MB}, peak_rss_mb_direct, base_rss_mb (resident before the video),
  video_mb, stock_tiny (or null), device, ...
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import torch  # noqa: E402

CONFIG = "dataengine_s128"
SCORED = "models.sam2.predict.ScoredVideoPredictor"
GOAL_RATIO = 1.10
PUBLISHED_TINY_FPS = 91.2  # SAM 2.1 hiera-tiny, A100, torch.compile (SAM 2 repository README)


# --- inputs ----------------------------------------------------------------------------------------
def make_video(frames: int, height: int, width: int, objects: int, seed: int = 0):
    """Noise background, `objects` coloured squares drifting at different speeds.
    Returns (uint8[T,H,W,3], bool[O,H,W] first-frame masks)."""
    rng = np.random.default_rng(seed)
    video = rng.integers(0, 90, size=(frames, height, width, 3), dtype=np.uint8)
    side = max(4, min(height, width) // 5)
    first = np.zeros((objects, height, width), dtype=bool)
    for k in range(objects):
        colour = rng.integers(120, 256, size=3, dtype=np.uint8)
        y = (k * side * 3 // 2) % max(1, height - side)
        for t in range(frames):
            x = (k * 7 + t * (k + 1)) % max(1, width - side)
            video[t, y:y + side, x:x + side] = colour
            if t == 0:
                first[k, y:y + side, x:x + side] = True
    return video, first


def size_overrides(size: int) -> dict:
    grid = size // 16  # RoPE grid of the stride-16 features the memory attention works on
    return {
        "model.image_size": size,
        "model.memory_attention.layer.self_attention.feat_sizes": [grid, grid],
        "model.memory_attention.layer.cross_attention.feat_sizes": [grid, grid],
    }


def build_ours(checkpoint: str | None, device: str, size: int | None = None, config: str = CONFIG):
    from models.sam2.build import build_sam2, read_state_dict

    overrides = {"model._target_": SCORED, **(size_overrides(size) if size else {})}
    if checkpoint:
        _, meta = read_state_dict(Path(checkpoint))
        return build_sam2(meta.get("config", config), checkpoint, device=device, overrides=overrides)
    torch.manual_seed(0)
    return build_sam2(config, device=device, overrides=overrides)


def build_direct(ours, config: str = CONFIG):
    """sam2's stock SAM2VideoPredictor (same config and inference settings) with our weights."""
    from models.sam2.build import build_sam2

    direct = build_sam2(config, device=str(ours.device))
    assert type(direct).__name__ == "SAM2VideoPredictor", type(direct)
    direct.load_state_dict(ours.state_dict())
    return direct


def write_jpeg_folder(frames: np.ndarray, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for t, fr in enumerate(frames):
        Image.fromarray(fr).save(folder / f"{t:05d}.jpg", quality=95)
    return folder


def quiet_sam2_loader() -> None:
    # sam2's JPEG loader draws a tqdm bar per call; our predict module already silences the one in
    # propagate_in_video, so silence this one too (otherwise every timed run prints a bar).
    import sam2.utils.misc as misc

    misc.tqdm = lambda iterable, *a, **k: iterable


# --- the two paths ---------------------------------------------------------------------------------
def run_ours(predictor, frames: np.ndarray, first_masks: np.ndarray) -> int:
    from models.sam2.predict import Prompt, VideoSegmenter

    seg = VideoSegmenter(predictor)
    prompts = [Prompt(object_id=k + 1, frame_index=0, mask=m) for k, m in enumerate(first_masks)]
    n = 0
    for r in seg.track(frames, prompts):
        n += int(r.masks.shape[0] > 0)
    return n


def run_direct(predictor, folder: Path, first_masks: np.ndarray) -> int:
    from models.sam2.build import pick_runtime

    runtime = pick_runtime(str(predictor.device))
    n = 0
    with torch.inference_mode(), runtime.autocast():
        state = predictor.init_state(str(folder))
        for k, m in enumerate(first_masks):
            predictor.add_new_mask(state, frame_idx=0, obj_id=k + 1, mask=torch.from_numpy(m))
        for _, _, masks in predictor.propagate_in_video(state):
            n += int((masks[:, 0] > 0.0).cpu().numpy().shape[0] > 0)
    return n


def timed(fn, *args) -> tuple[float, int]:
    return timed_cpu(fn, *args)[::2]


def timed_cpu(fn, *args) -> tuple[float, float, int]:
    """(wall seconds, this process's CPU seconds, fn's result). CPU time is reported beside wall
    time because a shared machine (a training job on the same cores) stretches wall time by
    whatever else runs; with one torch thread CPU time is close to the work done."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0, c0 = time.perf_counter(), time.process_time()
    n = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0, time.process_time() - c0, n


def current_rss_mb() -> float | None:
    """Resident set size now (not the peak), from /proc on Linux."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# --- (a) ratio -------------------------------------------------------------------------------------
def measure_ratio(args, device: str) -> dict:
    ours = build_ours(args.checkpoint, device)
    direct = build_direct(ours)
    h, w = args.video_size
    frames, first = make_video(args.frames, h, w, args.objects)
    with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
        folder = write_jpeg_folder(frames, Path(tmp) / "jpg")
        # Warm-up (allocator, kernels, lazily built constants), then interleaved timed runs so that
        # a background load slows both paths alike.
        run_ours(ours, frames, first)
        run_direct(direct, folder, first)
        ours_runs, direct_runs, ours_cpu, direct_cpu = [], [], [], []
        for _ in range(args.repeats):
            s, c, n = timed_cpu(run_ours, ours, frames, first)
            assert n == args.frames, n
            ours_runs.append(s)
            ours_cpu.append(c)
            s, c, n = timed_cpu(run_direct, direct, folder, first)
            assert n == args.frames, n
            direct_runs.append(s)
            direct_cpu.append(c)
    ours_s, direct_s = statistics.median(ours_runs), statistics.median(direct_runs)
    return {"ratio": ours_s / direct_s, "ours_s": ours_s, "direct_s": direct_s,
            "ours_runs": ours_runs, "direct_runs": direct_runs,
            "ratio_cpu": statistics.median(ours_cpu) / statistics.median(direct_cpu),
            "ours_cpu_s": statistics.median(ours_cpu), "direct_cpu_s": statistics.median(direct_cpu)}


# --- (b) fps by size -------------------------------------------------------------------------------
def measure_fps(args, device: str) -> dict[str, float]:
    out = {}
    for size in args.sizes:
        model = build_ours(None, device, size=size)  # random weights: sizes differ from any checkpoint
        frames, first = make_video(args.fps_frames, size * 3 // 4, size, args.objects)
        run_ours(model, frames[:2], first)  # warm-up
        # Median of 3: a background job on the same cores makes single runs vary by tens of %.
        s = statistics.median(timed(run_ours, model, frames, first)[0] for _ in range(3))
        out[str(size)] = args.fps_frames / s
    return out


# --- (c) peak RSS in fresh processes ---------------------------------------------------------------
def rss_child(args) -> None:
    """Runs in its own process: build, track one object through --rss-child frames, report."""
    torch.set_num_threads(args.threads)
    device = args.device
    model = build_ours(args.checkpoint, device)
    if args.rss_path == "direct":
        direct = build_direct(model)
        del model
    # Resident now: interpreter, torch, sam2 and the model (importing torch peaks higher for a
    # moment, so ru_maxrss may already exceed this). What tracking adds shows above it.
    base_mb = current_rss_mb()
    h, w = args.video_size
    if args.rss_path == "direct":
        # sam2 reads the JPEG folder the parent wrote; the video never sits here as an array.
        quiet_sam2_loader()
        _, first = make_video(1, h, w, 1)  # square positions do not depend on the length
        video_mb = 0.0
        n = run_direct(direct, Path(args.jpeg_folder), first)
    else:
        frames, first = make_video(args.rss_child, h, w, 1)
        video_mb = frames.nbytes / 2**20
        n = run_ours(model, frames, first[:1])
    assert n == args.rss_child, n
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"frames": n, "peak_rss_mb": peak_kb / 1024, "base_rss_mb": base_mb,
                      "video_mb": video_mb}))


def measure_rss(args, path: str) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    peaks, video, base = {}, {}, {}
    for n in args.long:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--rss-child", str(n), "--rss-path", path,
               "--threads", str(args.threads), "--device", args.device,
               "--video-size", f"{args.video_size[0]}x{args.video_size[1]}"]
        if args.checkpoint:
            cmd += ["--checkpoint", args.checkpoint]
        with tempfile.TemporaryDirectory(prefix="sam2-bench-") as tmp:
            if path == "direct":
                frames, _ = make_video(n, *args.video_size, 1)
                cmd += ["--jpeg-folder", str(write_jpeg_folder(frames, Path(tmp) / "jpg"))]
                del frames
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        if res.returncode != 0:
            raise RuntimeError(f"RSS child for {n} frames ({path}) failed:\n{res.stderr[-3000:]}")
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        peaks[str(n)] = rec["peak_rss_mb"]
        video[str(n)] = rec["video_mb"]
        base[str(n)] = rec["base_rss_mb"]
    return peaks, video, base


# --- (d) stock tiny on CUDA ------------------------------------------------------------------------
def measure_stock_tiny(device: str, frames: int, image_size: int | None = None) -> dict:
    """Our path with the official tiny config (random weights). `image_size` shrinks it, which is
    only meant for a CPU smoke test of this code; the published number is at 1024 px."""
    from models.sam2.build import build_sam2

    overrides = {"model._target_": SCORED, **(size_overrides(image_size) if image_size else {})}
    torch.manual_seed(0)
    model = build_sam2("sam2.1_hiera_tiny", device=device, overrides=overrides)
    video, first = make_video(frames, 480, 854, 1)  # DAVIS-like 480p
    run_ours(model, video[:4], first)  # warm-up (cuDNN autotune, allocator)
    s, _ = timed(run_ours, model, video, first)
    return {"config": "sam2.1_hiera_tiny", "image_size": image_size or 1024, "frames": frames,
            "objects": 1, "fps": frames / s, "published_fps": PUBLISHED_TINY_FPS,
            "published_setup": "A100, torch.compile, SAM 2.1 README",
            "ours_setup": (f"{torch.cuda.get_device_name(0)}, bf16 autocast, no compile" if device == "cuda"
                           else f"{device}, fp32, no compile")}


# --- main ------------------------------------------------------------------------------------------
def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--frames", type=int, default=48, help="frames of the ratio video")
    p.add_argument("--objects", type=int, default=2, help="objects tracked (ratio and fps)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per path (median)")
    p.add_argument("--sizes", default="128,256,512", help="model resolutions for fps")
    p.add_argument("--fps-frames", type=int, default=24, help="frames per fps measurement")
    p.add_argument("--long", default="250,1000", help="frame counts for peak RSS")
    p.add_argument("--no-direct-rss", action="store_true", help="skip sam2's own path in (c)")
    p.add_argument("--checkpoint", default=None, help="a trained checkpoint (default: random weights)")
    p.add_argument("--video-size", type=parse_size, default=(192, 256), help="HxW of the ratio/RSS video")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--rss-path", default="ours", choices=["ours", "direct"], help=argparse.SUPPRESS)
    p.add_argument("--jpeg-folder", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.long = [int(s) for s in args.long.split(",") if s]
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.rss_child is not None:
        rss_child(args)
        return 0

    torch.set_num_threads(args.threads)
    quiet_sam2_loader()
    t_start = time.time()
    log = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    ratio = measure_ratio(args, args.device)
    log(f"(a) ours {ratio['ours_s']:.3f} s vs sam2 direct {ratio['direct_s']:.3f} s "
        f"({args.frames} frames, {args.objects} objects, median of {args.repeats}): ratio {ratio['ratio']:.3f} "
        f"(goal <= {GOAL_RATIO}); CPU-time ratio {ratio['ratio_cpu']:.3f}")
    fps = measure_fps(args, args.device)
    log("(b) fps of our path: " + ", ".join(f"{s} px {v:.1f}" for s, v in fps.items()) +
        f" ({args.objects} objects, random weights)")
    peak, video_mb, base = measure_rss(args, "ours")
    peak_direct, _, base_direct = ({}, {}, {}) if args.no_direct_rss else measure_rss(args, "direct")
    log("(c) peak RSS, one object: " + ", ".join(
        f"{n} frames {peak[n]:.0f} MB (resident before the video {base[n]:.0f} MB, video {video_mb[n]:.0f} MB)"
        + (f", sam2 direct {peak_direct[n]:.0f} MB (resident before {base_direct[n]:.0f} MB)"
           if n in peak_direct else "") for n in peak))
    stock = None
    if torch.cuda.is_available():
        stock = measure_stock_tiny("cuda", frames=200)
        log(f"(d) stock sam2.1_hiera_tiny @1024 on {stock['ours_setup']}: {stock['fps']:.1f} FPS; "
            f"published {PUBLISHED_TINY_FPS} FPS ({stock['published_setup']})")
    else:
        log("(d) no CUDA device: stock sam2.1_hiera_tiny FPS not measured")
    result = {
        "ratio": ratio["ratio"], "ours_s": ratio["ours_s"], "direct_s": ratio["direct_s"],
        "meets_goal": ratio["ratio"] <= GOAL_RATIO, "goal_ratio": GOAL_RATIO,
        "ours_runs": ratio["ours_runs"], "direct_runs": ratio["direct_runs"],
        "ratio_cpu": ratio["ratio_cpu"], "ours_cpu_s": ratio["ours_cpu_s"], "direct_cpu_s": ratio["direct_cpu_s"],
        "fps": fps, "peak_rss_mb": peak, "peak_rss_mb_direct": peak_direct, "video_mb": video_mb,
        "base_rss_mb": base, "base_rss_mb_direct": base_direct,
        "stock_tiny": stock,
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else f"cpu ({args.threads} thread(s), {os.cpu_count()} cores)",
        "frames": args.frames, "objects": args.objects, "repeats": args.repeats,
        "video_size": list(args.video_size), "checkpoint": args.checkpoint or "random weights",
        "config": CONFIG, "wall_s": time.time() - t_start,
    }
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
