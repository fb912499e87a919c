"""pipelines.export.export_davis on real databases (SQLite and PostgreSQL): masklets written
directly, PNGs read back with Pillow and compared pixel by pixel with label maps built here."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from pipelines.export import davis_palette, export_davis
from storage.db import copy_insert, session_scope
from storage.masklets import FRAME_MASK_COLUMNS, MaskletRecord, frame_rows
from storage.masks import encode_rle
from storage.schema import Dataset, FrameMask, Masklet, MaskletStatus, ModelVersion, SourceKind, Video

pytestmark = pytest.mark.sam2

T, H, W = 5, 24, 40


def square(t: int, x0: int, side: int = 8, y0: int = 4) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y0 + side, x0 + 2 * t:x0 + 2 * t + side] = True
    return m


def add_dataset(engine, name: str = "ds", videos: tuple[str, ...] = ("walk",)) -> list[int]:
    with session_scope(engine) as s:
        ds = Dataset(name=name)
        s.add(ds)
        s.flush()
        rows = [Video(dataset_id=ds.id, uri=f"file:///data/{v}.mp4", sha256=f"{i:064x}", fps=24.0,
                      frame_count=T, width=W, height=H, size_bytes=1) for i, v in enumerate(videos, 1)]
        s.add_all(rows)
        s.flush()
        return [r.id for r in rows]


def add_model_version(engine, version: str) -> int:
    with session_scope(engine) as s:
        mv = ModelVersion(family="sam2", version=version, artifact_uri=f"file:///m/{version}.pt",
                          artifact_sha256="a" * 64, config={}, metrics={})
        s.add(mv)
        s.flush()
        return mv.id


def add_masklet(engine, video_id: int, object_id: int, masks: dict[int, np.ndarray],
                model_version_id: int | None = None) -> int:
    kind = SourceKind.MODEL if model_version_id else SourceKind.HUMAN
    with engine.begin() as conn:
        mid = conn.execute(Masklet.__table__.insert().values(
            video_id=video_id, object_id=object_id, label="thing", source_kind=kind,
            source_model_version_id=model_version_id,
            status=MaskletStatus.PREDICTED if model_version_id else MaskletStatus.CORRECTED,
        ).returning(Masklet.id)).scalar_one()
        rec = MaskletRecord(object_id=object_id, label="thing", rles={t: encode_rle(m) for t, m in masks.items()})
        copy_insert(conn, FrameMask, frame_rows(mid, rec), FRAME_MASK_COLUMNS)
    return mid


def read_png(path):
    img = Image.open(path)
    return img, np.array(img)


def test_indexed_pngs_hold_object_ids(engine, tmp_path):
    vid, = add_dataset(engine)
    obj1 = {t: square(t, 2) for t in range(T)}
    obj3 = {t: square(t, 6) for t in (1, 2, 3)}  # overlaps object 1; absent on frames 0 and 4
    add_masklet(engine, vid, 1, obj1)
    add_masklet(engine, vid, 3, obj3)

    summary = export_davis(engine, "ds", tmp_path / "out")
    assert (summary.videos, summary.frames) == (1, T)
    files = sorted(p.name for p in (tmp_path / "out" / "walk").iterdir())
    assert files == [f"{t:05d}.png" for t in range(T)]  # one per frame, DAVIS names

    palette = davis_palette()
    for t in range(T):
        img, labels = read_png(tmp_path / "out" / "walk" / f"{t:05d}.png")
        assert img.mode == "P" and labels.shape == (H, W)
        assert img.getpalette()[:768] == palette
        expected = np.zeros((H, W), np.uint8)
        expected[obj1[t]] = 1
        if t in obj3:
            expected[obj3[t]] = 3  # overlaps: the higher id is drawn on top
        np.testing.assert_array_equal(labels, expected)
    # The DAVIS (PASCAL VOC) colours, so official tools and viewers show the usual colours.
    assert palette[0:3] == [0, 0, 0] and palette[3:6] == [128, 0, 0] and palette[9:12] == [128, 128, 0]


def test_newest_masklet_of_an_object_wins_and_model_filter(engine, tmp_path):
    vid, = add_dataset(engine)
    v1, v2 = add_model_version(engine, "v1"), add_model_version(engine, "v2")
    predicted = {t: square(t, 2) for t in range(T)}
    corrected = {t: square(t, 20) for t in range(T)}
    add_masklet(engine, vid, 1, predicted, model_version_id=v1)
    add_masklet(engine, vid, 1, corrected)  # a person's correction, written later
    add_masklet(engine, vid, 2, {0: square(0, 30, side=4)}, model_version_id=v2)

    export_davis(engine, "ds", tmp_path / "all")
    _, first = read_png(tmp_path / "all" / "walk" / "00000.png")
    assert set(np.unique(first)) == {0, 1, 2}
    np.testing.assert_array_equal(first == 1, corrected[0])

    # Only one model version's output: the v1 prediction, none of v2 and no human masklet.
    export_davis(engine, "ds", tmp_path / "v1", model_version="v1")
    for t in range(T):
        _, labels = read_png(tmp_path / "v1" / "walk" / f"{t:05d}.png")
        np.testing.assert_array_equal(labels, predicted[t].astype(np.uint8))


@pytest.mark.badinput
def test_videos_without_masklets_and_unknown_datasets(engine, tmp_path):
    vid, _ = add_dataset(engine, videos=("walk", "empty"))  # "empty" gets no masklets
    add_masklet(engine, vid, 4, {0: square(0, 0)})
    summary = export_davis(engine, "ds", tmp_path / "out")
    assert summary.videos == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["walk"]
    with pytest.raises(ValueError, match="'nope' does not exist"):
        export_davis(engine, "nope", tmp_path / "out")
    add_masklet(engine, vid, 300, {0: square(0, 0)})
    with pytest.raises(ValueError, match="object id 300"):
        export_davis(engine, "ds", tmp_path / "out2")
