"""Seeded synthetic sources with exact ground truth (videos now; scene text and 3D scans later)."""
from storage.synthetic.videos import (  # noqa: F401
    BASE_SHAPES,
    DOMAINS,
    TARGET_SHAPES,
    SyntheticVideo,
    generate_video,
    generate_videos,
    video_seed,
)
