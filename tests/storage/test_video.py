"""Video IO: write/read round trip, and every kind of bad file giving VideoError naming the file."""
from __future__ import annotations

import os

import numpy as np
import pytest

from storage.video import (
    ProbeResult,
    VideoError,
    VideoInfo,
    probe_many,
    probe_video,
    read_frames,
    read_video,
    write_mp4,
)


def _frames(t=24, h=64, w=96, seed=0) -> np.ndarray:
    """Smooth moving gradients plus a moving square: what H.264 keeps well, yet every frame differs."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        out[i, ..., 0] = (xx / w * 200 + i * 2) % 256
        out[i, ..., 1] = yy / h * 200 + 20
        out[i, ..., 2] = 120
        sq = max(2, min(h, w) // 4)
        y0, x0 = (i * 2) % (h - sq + 1), (i * 3) % (w - sq + 1)
        out[i, y0 : y0 + sq, x0 : x0 + sq] = (240, 240, 30)
    return out


@pytest.fixture(scope="module")
def good_mp4(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "good.mp4"
    frames = _frames(t=48)
    write_mp4(path, frames, fps=25)
    return path, frames


def test_round_trip(good_mp4):
    path, frames = good_mp4
    info = probe_video(path)
    assert info == VideoInfo(str(path), 25.0, 48, 96, 64, "h264")
    assert info.duration_s == pytest.approx(48 / 25)
    assert probe_video(path, decode=True) == info
    video = read_video(path)
    assert video.shape == frames.shape and video.dtype == np.uint8
    diff = np.abs(video.astype(np.int16) - frames.astype(np.int16))
    # crf 17 is visually lossless; yuv420p halves colour resolution, so the square's coloured
    # edges differ more than the rest: check typical and per-frame error, not the worst pixel.
    assert np.median(diff) <= 2
    assert diff.mean(axis=(1, 2, 3)).max() < 4.0


def test_read_frames_range(good_mp4):
    path, _ = good_mp4
    video = read_video(path)
    part = list(read_frames(path, start=10, stop=13))
    assert len(part) == 3
    for got, want in zip(part, video[10:13], strict=True):
        np.testing.assert_array_equal(got, want)
    assert list(read_frames(path, start=40)) and len(list(read_frames(path, start=40))) == 8
    assert list(read_frames(path, start=5, stop=5)) == []
    with pytest.raises(ValueError):
        list(read_frames(path, start=5, stop=2))


def test_fractional_fps_and_lossless(tmp_path):
    frames = _frames(t=6, h=32, w=32)
    path = write_mp4(tmp_path / "ntsc.mp4", frames, fps=30000 / 1001, crf=0)
    info = probe_video(path)
    assert info.fps == pytest.approx(29.97, abs=0.01) and info.frame_count == 6
    # crf 0 is lossless in YUV; RGB -> yuv420p -> RGB still rounds and subsamples chroma.
    assert np.median(np.abs(read_video(path).astype(int) - frames)) <= 2


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    write_mp4(tmp_path / "a.mp4", _frames(t=3, h=16, w=16))
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]


# --- bad input -------------------------------------------------------------------------------------
@pytest.mark.badinput
def test_odd_size_is_refused_or_padded(tmp_path):
    frames = _frames(t=3, h=33, w=20)
    with pytest.raises(VideoError, match="33x20.*odd") as err:
        write_mp4(tmp_path / "odd.mp4", frames)
    assert "odd.mp4" in str(err.value)
    assert not (tmp_path / "odd.mp4").exists()
    assert list(tmp_path.iterdir()) == []  # no temp file left behind
    path = write_mp4(tmp_path / "pad.mp4", frames, pad_odd=True)
    info = probe_video(path)
    assert (info.height, info.width) == (34, 20)
    video = read_video(path)
    assert np.median(np.abs(video[:, :33].astype(int) - frames)) <= 4  # steep gradient at 20 px


@pytest.mark.badinput
def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(VideoError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [])
    with pytest.raises(VideoError, match="uint8"):
        write_mp4(tmp_path / "f.mp4", np.zeros((2, 16, 16, 3), np.float32))
    with pytest.raises(VideoError, match="frame 1 is 16x18"):
        write_mp4(tmp_path / "s.mp4", [np.zeros((16, 16, 3), np.uint8), np.zeros((16, 18, 3), np.uint8)])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.badinput
def test_truncated_file(good_mp4, tmp_path):
    path, _ = good_mp4
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="truncated") as err:
        probe_video(cut)
    assert err.value.path == str(cut) and str(cut) in str(err.value)
    with pytest.raises(VideoError, match="cut.mp4"):
        probe_video(cut, decode=True)
    with pytest.raises(VideoError, match="cut.mp4"):
        read_video(cut)


@pytest.mark.badinput
def test_truncated_without_index(good_mp4, tmp_path):
    # Cut inside the index (moov atom) itself: the container cannot even be opened.
    path, _ = good_mp4
    cut = tmp_path / "header-only.mp4"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(VideoError, match="header-only.mp4"):
        probe_video(cut)


@pytest.mark.badinput
def test_garbage_and_empty_and_missing_files(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(10_000))
    with pytest.raises(VideoError, match="not a readable video") as err:
        probe_video(garbage)
    assert err.value.path == str(garbage)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(VideoError, match="empty"):
        probe_video(empty)
    with pytest.raises(VideoError, match="not found"):
        probe_video(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="not a file"):
        probe_video(tmp_path)


def _zero_frame_mp4(path):
    """An mp4 whose encoder was opened and closed without a single frame."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=24)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.badinput
def test_zero_frame_video(tmp_path):
    path = _zero_frame_mp4(tmp_path / "zero.mp4")
    assert path.stat().st_size > 0
    with pytest.raises(VideoError, match="zero.mp4"):
        probe_video(path)
    with pytest.raises(VideoError, match="zero.mp4"):
        list(read_frames(path))


@pytest.mark.badinput
def test_probe_many_isolates_bad_files(good_mp4, tmp_path):
    path, _ = good_mp4
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(4096))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    zero = _zero_frame_mp4(tmp_path / "zero.mp4")
    second = write_mp4(tmp_path / "second.mp4", _frames(t=5, h=16, w=16))
    paths = [path, garbage, cut, tmp_path / "missing.mp4", zero, second]
    results = probe_many(paths)
    assert [r.path for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, False, False, False, True]
    assert results[0].info.frame_count == 48 and results[5].info.frame_count == 5
    assert all(isinstance(r, ProbeResult) for r in results)
    assert "truncated" in results[2].error and "not found" in results[3].error
    assert all(r.error for r in results if not r.ok)
    # Deep check agrees.
    assert [r.ok for r in probe_many(paths, decode=True)] == [True, False, False, False, False, True]
