"""Mask codecs: COCO RLE (what we store) and Label Studio brush RLE (what annotators edit).

- COCO RLE goes through pycocotools. Its C code wants Fortran-order uint8 arrays and returns
  `counts` as bytes; we always hand out `{"size": [H, W], "counts": str}` so RLEs are JSON-ready.
- Label Studio brush RLE: the format of `label_studio_sdk.converter.brush`, coded with numpy in
  `storage.brush_rle` (byte-identical to the SDK, much faster): a mask becomes a flat RGBA byte
  stream (4 bytes per pixel) run-length coded; decoding gives H*W*4 bytes, of which the alpha
  channel (index 3) is the mask. Brush and eraser edges leave partial alpha, hence the threshold.
- Conversions between the two go through the boolean mask, so they are exact (pixel for pixel).

Every function that is given a frame size checks it: a mask that does not fit its frame raises
`MaskSizeError` naming both sizes, never a silently cropped or garbled mask.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from storage import brush_rle

Size = tuple[int, int]  # (height, width), like numpy shapes and COCO's "size"


class MaskSizeError(ValueError):
    """A mask (or RLE) whose size does not match the frame it belongs to."""

    def __init__(self, got: Sequence[int], expected: Sequence[int] | None, what: str = "mask",
                 message: str | None = None):
        self.got = tuple(int(v) for v in got)
        self.expected = tuple(int(v) for v in expected) if expected is not None else None
        if message is None:
            got_text = "x".join(str(v) for v in self.got)
            frame = (f"its frame is {self.expected[0]}x{self.expected[1]}" if self.expected
                     else "a mask must be 2-D (HxW)")
            message = f"{what} is {got_text} (HxW) but {frame}"
        super().__init__(message)


class RleError(ValueError):
    """An RLE that is malformed or decodes to a different number of pixels than it claims."""


def check_mask_size(mask: np.ndarray, expected_size: Sequence[int] | None, what: str = "mask") -> None:
    """Raise MaskSizeError unless `mask` is 2-D and (when given) of shape `expected_size`."""
    if mask.ndim != 2:
        raise MaskSizeError(mask.shape, expected_size, what)
    if expected_size is not None and tuple(mask.shape) != tuple(int(v) for v in expected_size):
        raise MaskSizeError(mask.shape, expected_size, what)


def _as_bool(mask) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.dtype != bool:
        mask = mask != 0
    return mask


# --- COCO RLE (pycocotools) ------------------------------------------------------------------------
def _coco():
    # Imported lazily: pycocotools is a C extension that only codec users need.
    import pycocotools.mask as coco_mask

    return coco_mask


def _coco_string_counts(s: bytes) -> list[int]:
    """Parse COCO's compressed counts string (the LEB128-like scheme of pycocotools' maskApi.c)
    into run lengths. Only used to *validate* an RLE before pycocotools decodes it: pycocotools
    itself reads past short counts into uninitialised memory instead of failing."""
    counts: list[int] = []
    p = 0
    n = len(s)
    while p < n:
        x = 0
        k = 0
        more = True
        while more:
            if p >= n:
                raise RleError("COCO RLE counts string ends in the middle of a number")
            c = s[p] - 48
            if not 0 <= c < 64:
                raise RleError(f"COCO RLE counts string has an invalid character {chr(s[p])!r}")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def _normalise_rle(rle: dict) -> tuple[dict, Size]:
    """Check an RLE dict and return (pycocotools-ready RLE with bytes counts, (H, W))."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise RleError(f"not a COCO RLE (need 'size' and 'counts'): {type(rle).__name__}")
    try:
        h, w = (int(v) for v in rle["size"])
    except (TypeError, ValueError):
        raise RleError(f"COCO RLE size must be [height, width], got {rle['size']!r}") from None
    if h < 0 or w < 0:
        raise RleError(f"COCO RLE size must be non-negative, got {[h, w]}")
    counts = rle["counts"]
    if isinstance(counts, list):
        runs = [int(c) for c in counts]
    else:
        if isinstance(counts, str):
            counts = counts.encode("ascii")
        if not isinstance(counts, bytes):
            raise RleError(f"COCO RLE counts must be str, bytes or a list, got {type(counts).__name__}")
        runs = _coco_string_counts(counts)
    if any(c < 0 for c in runs):
        raise RleError("COCO RLE has a negative run length")
    total = sum(runs)
    if total != h * w:
        raise RleError(
            f"COCO RLE decodes to {total} pixels but its size {h}x{w} needs {h * w}"
        )
    if isinstance(rle["counts"], list):
        # Uncompressed RLE (as in COCO's iscrowd annotations): let pycocotools compress it.
        return _coco().frPyObjects({"size": [h, w], "counts": runs}, h, w), (h, w)
    return {"size": [h, w], "counts": counts}, (h, w)


def encode_rle(mask, expected_size: Sequence[int] | None = None) -> dict:
    """bool[H, W] -> {"size": [H, W], "counts": str} (COCO compressed RLE)."""
    mask = _as_bool(mask)
    check_mask_size(mask, expected_size)
    rle = _coco().encode(np.asfortranarray(mask, dtype=np.uint8))
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": rle["counts"].decode("ascii")}


def decode_rle(rle: dict, expected_size: Sequence[int] | None = None) -> np.ndarray:
    """COCO RLE (compressed str/bytes counts, or uncompressed list) -> C-ordered bool[H, W].
    Raises MaskSizeError when `expected_size` is given and differs, RleError when malformed."""
    coco_rle, size = _normalise_rle(rle)
    if expected_size is not None and tuple(size) != tuple(int(v) for v in expected_size):
        raise MaskSizeError(size, expected_size, "RLE")
    if size[0] == 0 or size[1] == 0:
        return np.zeros(size, dtype=bool)
    return np.ascontiguousarray(_coco().decode(coco_rle), dtype=bool)


def rle_area(rle: dict) -> int:
    """Number of foreground pixels."""
    coco_rle, _ = _normalise_rle(rle)
    return int(_coco().area(coco_rle))


def rle_bbox(rle: dict) -> list[int]:
    """Tight box [x, y, w, h] in pixels around the foreground; [0, 0, 0, 0] when empty."""
    coco_rle, _ = _normalise_rle(rle)
    return [int(v) for v in _coco().toBbox(coco_rle)]


def rle_iou(a: dict, b: dict) -> float:
    """IoU of two RLEs of one frame. Two empty masks agree perfectly: 1.0 (the DAVIS/J convention;
    pycocotools would say 0)."""
    ra, sa = _normalise_rle(a)
    rb, sb = _normalise_rle(b)
    if sa != sb:
        raise MaskSizeError(sb, sa, "second RLE")
    coco = _coco()
    if coco.area(ra) == 0 and coco.area(rb) == 0:
        return 1.0
    return float(coco.iou([ra], [rb], [0])[0, 0])


def mask_iou(a, b) -> float:
    """IoU of two boolean masks of one frame; 1.0 when both are empty (see rle_iou)."""
    a = _as_bool(a)
    b = _as_bool(b)
    check_mask_size(a, None)
    check_mask_size(b, a.shape, "second mask")
    union = np.count_nonzero(a | b)
    if union == 0:
        return 1.0
    return float(np.count_nonzero(a & b) / union)


# --- Label Studio brush RLE ------------------------------------------------------------------------
def _brush():
    from label_studio_sdk.converter import brush

    return brush


def mask_to_brush(mask, expected_size: Sequence[int] | None = None) -> list[int]:
    """bool[H, W] -> Label Studio brush RLE (list of byte values), foreground at alpha 255.

    Byte for byte what ``label_studio_sdk.converter.brush.mask2rle`` writes (every RGBA channel
    0 or 255), computed with numpy (``storage.brush_rle``) instead of the SDK's per-run string
    building (~30x faster)."""
    mask = _as_bool(mask)
    check_mask_size(mask, expected_size)
    if mask.size == 0:
        return [int(v) for v in _brush().mask2rle(mask.astype(np.uint8) * np.uint8(255))]
    return brush_rle.encode(mask.ravel().astype(np.uint8) * np.uint8(255), repeat=4)


def brush_to_mask(brush: Sequence[int], height: int, width: int, alpha_threshold: int = 128) -> np.ndarray:
    """Label Studio brush RLE -> bool[height, width]: pixels whose alpha >= `alpha_threshold`.
    Raises MaskSizeError when the RLE is for a different number of pixels than the frame has.

    Decoded by ``storage.brush_rle.decode`` (numpy; equal to the SDK's pure-Python ``decode_rle``,
    which cost about half of the sync's apply time)."""
    data = brush_rle.as_bytes(brush)
    if data.size < 7:  # 32-bit length + 5-bit word size + 4 x 4-bit run sizes = 53 bits
        raise RleError(f"brush RLE too short to hold its header ({data.size} bytes)")
    # The first 32 bits are the decoded byte count (4 per pixel). Check them before decoding, so a
    # wrong or hostile RLE never makes us allocate gigabytes.
    n_bytes = int.from_bytes(data[:4].tobytes(), "big")
    expected = height * width * 4
    if n_bytes != expected:
        if n_bytes % 4 == 0:
            # The brush RLE knows its pixel count, not its shape: report the count.
            raise MaskSizeError(
                (n_bytes // 4,), (height, width),
                message=f"brush RLE holds {n_bytes // 4} pixels but its frame is "
                        f"{height}x{width} (HxW) = {height * width} pixels",
            )
        raise RleError(f"brush RLE holds {n_bytes} bytes, not a whole number of RGBA pixels")
    try:
        flat = brush_rle.decode(data)
    except (ValueError, IndexError, OverflowError) as e:  # OverflowError: words over 8 bits
        raise RleError(f"brush RLE is malformed (ends early or has bad runs): {e}") from None
    if flat.size != expected:
        raise RleError(f"brush RLE decoded to {flat.size} bytes, expected {expected}")
    alpha = flat.reshape(height, width, 4)[:, :, 3]
    return alpha >= alpha_threshold


def rle_to_brush(rle: dict, expected_size: Sequence[int] | None = None) -> list[int]:
    """COCO RLE -> Label Studio brush RLE (exact)."""
    return mask_to_brush(decode_rle(rle, expected_size))


def brush_to_rle(brush: Sequence[int], height: int, width: int, alpha_threshold: int = 128) -> dict:
    """Label Studio brush RLE -> COCO RLE (exact for masks written by mask_to_brush)."""
    return encode_rle(brush_to_mask(brush, height, width, alpha_threshold))
