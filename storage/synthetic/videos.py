"""Seeded synthetic videos with exact ground-truth masklets.

Each video shows a few textured shapes over a textured background. Shapes move with a velocity plus
a sinusoidal wobble, change scale, rotate, occlude each other (a fixed depth order) and may leave the
frame and come back. Every pixel's owner is known, so the visible mask of each object on each frame
is exact: the shape's support minus everything drawn above it.

Two domains share the generator but not their looks: `base` (discs, ellipses, rectangles, triangles;
stripes and smooth noise) is what the base model is pre-trained on; `target` (stars, crosses, rings,
hexagons, crescents; checkers and dots over busier backgrounds) is what the data engine meets later.

The same (seed, domain, options) always yields the same video, bit for bit.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

BASE_SHAPES = ("disc", "ellipse", "rectangle", "triangle")
TARGET_SHAPES = ("star", "cross", "ring", "hexagon", "crescent")
DOMAINS = {"base": BASE_SHAPES, "target": TARGET_SHAPES}


@dataclass
class SyntheticVideo:
    """One generated video and its ground truth (never shown to a model as input)."""

    name: str
    seed: int
    domain: str
    frames: np.ndarray  # uint8 [T, H, W, 3]
    masks: np.ndarray  # bool [T, O, H, W], visible (occluded) masks
    object_ids: list[int]
    labels: list[str]
    fps: float = 12.0
    meta: dict = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames.shape[1]), int(self.frames.shape[2])


@dataclass
class _Track:
    label: str
    center0: np.ndarray
    velocity: np.ndarray
    wobble_amp: np.ndarray
    wobble_freq: float
    wobble_phase: np.ndarray
    radius0: float
    scale_amp: float
    scale_freq: float
    angle0: float
    spin: float
    aspect: float
    color: np.ndarray
    color2: np.ndarray
    texture: str
    texture_freq: float
    texture_angle: float
    noise: np.ndarray  # small tile of texture noise in object coordinates

    def pose(self, t: int) -> tuple[float, float, float, float]:
        c = self.center0 + self.velocity * t + self.wobble_amp * np.sin(
            self.wobble_freq * t + self.wobble_phase
        )
        r = self.radius0 * (1.0 + self.scale_amp * np.sin(self.scale_freq * t))
        return float(c[0]), float(c[1]), float(r), self.angle0 + self.spin * t


def _shape_support(label: str, u: np.ndarray, v: np.ndarray, aspect: float) -> np.ndarray:
    """Inside test in object coordinates (u, v scaled so the shape spans about [-1, 1])."""
    rho2 = u * u + v * v
    if label == "disc":
        return rho2 <= 1.0
    if label == "ellipse":
        return (u / 1.0) ** 2 + (v / aspect) ** 2 <= 1.0
    if label == "rectangle":
        return (np.abs(u) <= 0.95) & (np.abs(v) <= 0.95 * aspect)
    if label == "triangle":
        # Equilateral triangle pointing up in object coordinates.
        return (v <= 0.6) & (v >= -1.0 + 1.732 * np.abs(u) - 0.1) & (np.abs(u) <= 1.0)
    if label == "star":
        theta = np.arctan2(v, u)
        rmax = 0.55 + 0.45 * np.abs(np.cos(2.5 * theta))
        return np.sqrt(rho2) <= rmax
    if label == "cross":
        w = 0.38
        return ((np.abs(u) <= w) & (np.abs(v) <= 1.0)) | ((np.abs(v) <= w) & (np.abs(u) <= 1.0))
    if label == "ring":
        return (rho2 <= 1.0) & (rho2 >= 0.45**2)
    if label == "hexagon":
        a = np.abs(u)
        b = np.abs(v)
        return (b <= 0.866) & (0.866 * a + 0.5 * b <= 0.866)
    if label == "crescent":
        return (rho2 <= 1.0) & ((u - 0.45) ** 2 + v * v >= 0.7**2)
    raise ValueError(f"unknown synthetic shape {label!r}")


def _texture(track: _Track, u: np.ndarray, v: np.ndarray, domain: str) -> np.ndarray:
    """RGB float colours of the object's surface at object coordinates (moves with the object)."""
    ca, sa = np.cos(track.texture_angle), np.sin(track.texture_angle)
    s = u * ca + v * sa
    if track.texture == "stripes":
        w = 0.5 + 0.5 * np.sin(track.texture_freq * s)
    elif track.texture == "smooth":
        w = 0.5 + 0.5 * np.tanh(1.5 * (u * 0.8 - v * 0.6))
    elif track.texture == "checker":
        k = track.texture_freq / np.pi
        w = ((np.floor(u * k) + np.floor(v * k)) % 2).astype(np.float32)
    elif track.texture == "dots":
        k = track.texture_freq / 2
        w = ((np.sin(k * u) * np.sin(k * v)) > 0.3).astype(np.float32)
    else:  # "solid"
        w = np.zeros_like(u)
    n = track.noise.shape[0]
    iu = np.clip(((u + 1.2) / 2.4 * (n - 1)).astype(np.int32), 0, n - 1)
    iv = np.clip(((v + 1.2) / 2.4 * (n - 1)).astype(np.int32), 0, n - 1)
    w = np.clip(w + track.noise[iv, iu], 0.0, 1.0)
    return track.color[None, :] * (1 - w[:, None]) + track.color2[None, :] * w[:, None]


def _background(rng: np.random.Generator, h: int, w: int, domain: str, difficulty: float) -> np.ndarray:
    """A textured background: smooth colour noise (base) or busier blobs and grids (target)."""
    def smooth_field(cells: int) -> np.ndarray:
        coarse = rng.random((cells + 1, cells + 1, 3)).astype(np.float32)
        ys = np.linspace(0, cells, h, dtype=np.float32)
        xs = np.linspace(0, cells, w, dtype=np.float32)
        y0 = np.floor(ys).astype(int).clip(0, cells - 1)
        x0 = np.floor(xs).astype(int).clip(0, cells - 1)
        fy = (ys - y0)[:, None, None]
        fx = (xs - x0)[None, :, None]
        a = coarse[y0][:, x0]
        b = coarse[y0][:, x0 + 1]
        c = coarse[y0 + 1][:, x0]
        d = coarse[y0 + 1][:, x0 + 1]
        return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy

    base_col = rng.uniform(0.15, 0.85, 3).astype(np.float32)
    if domain == "base":
        field_ = smooth_field(3)
        bg = 0.55 * base_col + 0.45 * field_
    else:
        field_ = 0.6 * smooth_field(6) + 0.4 * smooth_field(12)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        grid = (np.sin(xx * rng.uniform(0.3, 0.7)) * np.sin(yy * rng.uniform(0.3, 0.7)) > 0.6)
        bg = 0.45 * base_col + 0.55 * field_
        bg = bg + 0.12 * difficulty * grid[..., None] * rng.choice([-1.0, 1.0])
    return np.clip(bg, 0, 1)


def _make_track(rng: np.random.Generator, label: str, h: int, w: int, frames: int, domain: str,
                difficulty: float, leaves: bool) -> _Track:
    short = min(h, w)
    radius0 = rng.uniform(0.10, 0.20) * short
    center0 = np.array([rng.uniform(0.25, 0.75) * w, rng.uniform(0.25, 0.75) * h])
    speed = rng.uniform(0.2, 1.2) * difficulty * short / 64.0
    direction = rng.uniform(0, 2 * np.pi)
    velocity = speed * np.array([np.cos(direction), np.sin(direction)])
    wobble_amp = rng.uniform(0.0, 0.10, 2) * short * difficulty
    wobble_freq = rng.uniform(0.1, 0.4)
    if leaves:
        # Swing far enough to leave the frame and come back within the video.
        wobble_amp = np.array([0.75 * w, rng.uniform(0.0, 0.1) * h])
        wobble_freq = 2 * np.pi / max(frames * rng.uniform(0.8, 1.1), 4)
        velocity = velocity * 0.2
    textures = ("stripes", "smooth", "solid") if domain == "base" else ("checker", "dots", "stripes")
    color = rng.uniform(0.0, 1.0, 3).astype(np.float32)
    color2 = np.clip(color + rng.uniform(-0.6, 0.6, 3), 0, 1).astype(np.float32)
    return _Track(
        label=label,
        center0=center0,
        velocity=velocity,
        wobble_amp=wobble_amp,
        wobble_freq=wobble_freq,
        wobble_phase=rng.uniform(0, 2 * np.pi, 2) if not leaves else np.array([0.0, 0.0]),
        radius0=radius0,
        scale_amp=rng.uniform(0.0, 0.3) * min(difficulty, 1.5),
        scale_freq=rng.uniform(0.05, 0.3),
        angle0=rng.uniform(0, 2 * np.pi),
        spin=rng.uniform(-0.08, 0.08) * difficulty,
        aspect=rng.uniform(0.45, 0.8),
        color=color,
        color2=color2,
        texture=str(rng.choice(textures)),
        texture_freq=rng.uniform(4.0, 10.0),
        texture_angle=rng.uniform(0, np.pi),
        noise=(rng.standard_normal((16, 16)).astype(np.float32) * 0.08),
    )


def generate_video(
    seed: int,
    domain: str = "base",
    size: int | tuple[int, int] = 128,
    frames: int = 24,
    objects: int = 3,
    difficulty: float = 1.0,
    leave_prob: float = 0.25,
    noise_std: float = 0.02,
    name: str | None = None,
) -> SyntheticVideo:
    """Render one video. `difficulty` scales speed, wobble, spin and background clutter."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; choose one of {sorted(DOMAINS)}")
    if frames < 1:
        raise ValueError(f"a synthetic video needs at least one frame (got frames={frames})")
    if objects < 1:
        raise ValueError(f"a synthetic video needs at least one object (got objects={objects})")
    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    # Each (domain, seed) pair gets its own stream, so the two domains never share videos.
    rng = np.random.default_rng([seed, 0 if domain == "base" else 1, h, w])
    shapes = DOMAINS[domain]
    labels = [str(rng.choice(shapes)) for _ in range(objects)]
    # The first object never leaves: every video keeps at least one object in view on frame 0.
    tracks = [
        _make_track(rng, lab, h, w, frames, domain, difficulty, leaves=(i > 0 and rng.random() < leave_prob))
        for i, lab in enumerate(labels)
    ]
    bg = _background(rng, h, w, domain, difficulty)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy += 0.5
    xx += 0.5

    video = np.empty((frames, h, w, 3), dtype=np.uint8)
    masks = np.zeros((frames, objects, h, w), dtype=bool)
    pix_noise_rng = np.random.default_rng([seed, 7, h, w, frames])
    for t in range(frames):
        canvas = bg.copy()
        owner = np.full((h, w), -1, dtype=np.int32)
        # Depth order: object 0 is at the back, the last object in front.
        for k, tr in enumerate(tracks):
            cx, cy, r, ang = tr.pose(t)
            x0, x1 = int(max(0, np.floor(cx - 1.3 * r))), int(min(w, np.ceil(cx + 1.3 * r)))
            y0, y1 = int(max(0, np.floor(cy - 1.3 * r))), int(min(h, np.ceil(cy + 1.3 * r)))
            if x0 >= x1 or y0 >= y1:
                continue
            dx = (xx[y0:y1, x0:x1] - cx) / r
            dy = (yy[y0:y1, x0:x1] - cy) / r
            ca, sa = np.cos(ang), np.sin(ang)
            u = dx * ca + dy * sa
            v = -dx * sa + dy * ca
            inside = _shape_support(tr.label, u, v, tr.aspect)
            if not inside.any():
                continue
            colours = _texture(tr, u[inside], v[inside], domain)
            sub = canvas[y0:y1, x0:x1]
            sub[inside] = colours
            owner[y0:y1, x0:x1][inside] = k
        for k in range(objects):
            masks[t, k] = owner == k
        if noise_std > 0:
            canvas = canvas + pix_noise_rng.normal(0.0, noise_std, canvas.shape).astype(np.float32)
        video[t] = np.clip(canvas * 255.0 + 0.5, 0, 255).astype(np.uint8)

    return SyntheticVideo(
        name=name or f"{domain}_s{seed:06d}",
        seed=seed,
        domain=domain,
        frames=video,
        masks=masks,
        object_ids=list(range(1, objects + 1)),
        labels=labels,
        meta={"difficulty": difficulty, "leave_prob": leave_prob, "size": [h, w]},
    )


def video_seed(dataset_seed: int, index: int) -> int:
    """The seed of the index-th video of a dataset seeded with dataset_seed (stable, spread out)."""
    return int(np.random.default_rng([dataset_seed, index, 99]).integers(0, 2**31 - 1))


def generate_videos(seed: int, count: int, **kwargs) -> list[SyntheticVideo]:
    """`count` videos derived from one dataset seed; object count varies 1..max per video."""
    max_objects = int(kwargs.pop("objects", 3))
    out = []
    for i in range(count):
        vs = video_seed(seed, i)
        n_obj = int(np.random.default_rng([vs, 5]).integers(1, max_objects + 1)) if max_objects > 1 else 1
        out.append(generate_video(vs, objects=n_obj, name=f"{kwargs.get('domain', 'base')}_d{seed}_v{i:04d}", **kwargs))
    return out
