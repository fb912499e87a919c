"""Video IO through PyAV (FFmpeg's libraries): probe, read frames, write mp4.

Every failure to read a file becomes `VideoError(path, reason)`, whatever layer of FFmpeg noticed
it (missing file, garbage bytes, an mp4 cut short, a stream with no frames), so callers catch one
type and always know which file was bad. `probe_many` applies that to a batch: one bad file is a
result, never an exception that stops the others.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np


class VideoError(Exception):
    """A video that cannot be read or written as asked. Names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    path: str
    fps: float
    frame_count: int
    width: int
    height: int
    codec: str

    @property
    def duration_s(self) -> float:
        return self.frame_count / self.fps if self.fps else 0.0


@dataclass(frozen=True)
class ProbeResult:
    """One file of a batch: `info` when it could be read, else `error` (the reason)."""

    path: str
    info: VideoInfo | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.info is not None


def _av():
    import av

    # FFmpeg prints its own complaints about broken files to stderr; we report them as VideoError.
    av.logging.set_level(av.logging.PANIC)
    return av


def _ffmpeg_reason(e: Exception, path: Path) -> str:
    """FFmpeg's error in words, plus its last log line (which says what was wrong, e.g. "moov atom
    not found"); not str(e), which repeats the file name and an errno nobody can use."""
    reason = getattr(e, "strerror", None) or str(e).replace(f": '{path}'", "")
    log = getattr(e, "log", None)
    if log and len(log) == 3 and str(log[2]).strip():
        reason += f" ({log[1]}: {str(log[2]).strip()})" if log[1] else f" ({str(log[2]).strip()})"
    return reason


def _open_input(path: Path):
    av = _av()
    if not path.exists():
        raise VideoError(path, "file not found")
    if not path.is_file():
        raise VideoError(path, "not a file")
    if path.stat().st_size == 0:
        raise VideoError(path, "file is empty (0 bytes)")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as e:
        raise VideoError(
            path, f"not a readable video (corrupt, truncated or not a video): {_ffmpeg_reason(e, path)}"
        ) from None
    except OSError as e:
        raise VideoError(path, f"cannot open: {e}") from None
    if not container.streams.video:
        container.close()
        # e.g. an mp4 closed before its first frame: the muxer drops the stream altogether.
        raise VideoError(path, "no video stream (an empty, audio-only or never-finished file)")
    return container


def _rate(stream) -> Fraction | None:
    for rate in (stream.average_rate, stream.base_rate, stream.guessed_rate):
        if rate:
            return Fraction(rate)
    return None


def probe_video(path: str | os.PathLike, *, decode: bool = False) -> VideoInfo:
    """Metadata of a video file. Demuxes every packet (cheap: no decoding) to count frames and to
    catch files cut short; `decode=True` also decodes every frame, which catches corrupt
    bitstreams too (slower: use it at ingest). Raises VideoError naming the file."""
    path = Path(path)
    container = _open_input(path)
    av = _av()
    try:
        stream = container.streams.video[0]
        declared = int(stream.frames or 0)
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        codec = ctx.name or "unknown"
        rate = _rate(stream)
        counted = 0
        try:
            if decode:
                for _ in container.decode(stream):
                    counted += 1
            else:
                for packet in container.demux(stream):
                    if packet.size:  # the demuxer ends with an empty flush packet
                        counted += 1
        except av.FFmpegError as e:
            raise VideoError(
                path, f"corrupt or truncated after {counted} frames: {_ffmpeg_reason(e, path)}"
            ) from None
    finally:
        container.close()
    if counted == 0:
        raise VideoError(path, "video stream has no frames")
    if declared and counted < declared:
        # The container's index promises more frames than the file holds: it was cut short.
        raise VideoError(path, f"truncated: header declares {declared} frames, only {counted} present")
    if width <= 0 or height <= 0:
        raise VideoError(path, f"video stream has no frame size ({width}x{height})")
    if rate is None:
        raise VideoError(path, "video stream has no frame rate")
    return VideoInfo(str(path), float(rate), counted, width, height, codec)


def probe_many(paths: Iterable[str | os.PathLike], *, decode: bool = False) -> list[ProbeResult]:
    """Probe each file; a file that fails is a ProbeResult with `error`, and the batch goes on."""
    results = []
    for p in paths:
        try:
            results.append(ProbeResult(str(p), info=probe_video(p, decode=decode)))
        except VideoError as e:
            results.append(ProbeResult(str(p), error=e.reason))
        except Exception as e:  # noqa: BLE001 - an unforeseen failure is still one file's failure
            results.append(ProbeResult(str(p), error=f"{type(e).__name__}: {e}"))
    return results


def read_frames(path: str | os.PathLike, start: int = 0, stop: int | None = None) -> Iterator[np.ndarray]:
    """Yield RGB frames uint8[H, W, 3] with index in [start, stop). Decodes from the first frame
    (seeking in long-GOP video lands on keyframes, not frame indices; exact indices matter more
    here than speed). Raises VideoError if the file is corrupt, or ends before the frame count
    its header declares."""
    if start < 0 or (stop is not None and stop < start):
        raise ValueError(f"bad frame range [{start}, {stop}) for {path}")
    path = Path(path)
    container = _open_input(path)
    av = _av()
    try:
        stream = container.streams.video[0]
        # No frame threading (thread_type="AUTO"): closing a frame-threaded decoder before the
        # end of the stream (a `stop` before the last frame) deadlocked PyAV 18 here.
        declared = int(stream.frames or 0)
        index = 0
        try:
            for frame in container.decode(stream):
                if stop is not None and index >= stop:
                    return
                if index >= start:
                    yield frame.to_ndarray(format="rgb24")
                index += 1
        except av.FFmpegError as e:
            raise VideoError(
                path, f"corrupt or truncated at frame {index}: {_ffmpeg_reason(e, path)}"
            ) from None
        if index == 0:
            raise VideoError(path, "video stream has no frames")
        if declared and index < declared:
            raise VideoError(path, f"truncated: header declares {declared} frames, only {index} decoded")
    finally:
        container.close()


def read_video(path: str | os.PathLike) -> np.ndarray:
    """All frames as uint8[T, H, W, 3]."""
    frames = list(read_frames(path))
    return np.stack(frames)


def write_mp4(
    path: str | os.PathLike,
    frames: Iterable[np.ndarray] | np.ndarray,
    fps: float | Fraction = 24,
    *,
    crf: int = 17,
    pad_odd: bool = False,
) -> Path:
    """Write RGB frames uint8[H, W, 3] as H.264 (libx264, yuv420p) mp4, atomically (a temp file
    renamed into place). yuv420p needs even sizes: odd ones are an error unless `pad_odd`, which
    repeats the last row/column (the frame size then grows by one, so masks would no longer fit:
    hence opt-in). `crf` 17 is visually lossless; lower is closer, 0 is lossless."""
    av = _av()
    path = Path(path)
    rate = Fraction(fps).limit_denominator(100_000)
    if rate <= 0:
        raise VideoError(path, f"fps must be positive, got {fps}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    count = 0
    size: tuple[int, int] | None = None
    try:
        # format="mp4": the temp name's extension is not .mp4. faststart puts the index (moov)
        # first, so browsers (Label Studio, FiftyOne) can play from a URL before the end arrives.
        with av.open(str(tmp), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = None
            for frame in frames:
                frame = _check_frame(path, frame, count, size)
                if size is None:
                    size = frame.shape[:2]
                    stream = _add_h264_stream(path, container, rate, size, crf, pad_odd)
                if pad_odd and (frame.shape[0] % 2 or frame.shape[1] % 2):
                    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)),
                                   mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                count += 1
            if stream is None:
                raise VideoError(path, "no frames to write")
            for packet in stream.encode():  # flush the encoder's delayed frames
                container.mux(packet)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _check_frame(path: Path, frame, index: int, size: tuple[int, int] | None) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise VideoError(path, f"frame {index} has shape {frame.shape}; expected (H, W, 3) RGB")
    if frame.dtype != np.uint8:
        raise VideoError(path, f"frame {index} has dtype {frame.dtype}; expected uint8")
    if size is not None and frame.shape[:2] != size:
        raise VideoError(path, f"frame {index} is {frame.shape[0]}x{frame.shape[1]}, "
                               f"earlier frames are {size[0]}x{size[1]} (HxW)")
    return np.ascontiguousarray(frame)


def _add_h264_stream(path: Path, container, rate: Fraction, size: Sequence[int], crf: int, pad_odd: bool):
    h, w = size
    if (h % 2 or w % 2) and not pad_odd:
        raise VideoError(
            path,
            f"frame size {h}x{w} (HxW) is odd; H.264 yuv420p needs even width and height "
            "(crop the frames, or pass pad_odd=True to repeat the last row/column)",
        )
    stream = container.add_stream("libx264", rate=rate)
    stream.height = h + h % 2
    stream.width = w + w % 2
    stream.pix_fmt = "yuv420p"
    stream.options = {"crf": str(int(crf))}
    return stream
