"""Mask codecs: COCO RLE and Label Studio brush RLE, and exact conversion between them.
Property-style: many random masks (noise, blobs, empty, full) of several sizes, fixed seeds."""
from __future__ import annotations

import json

import numpy as np
import pytest

from storage.masks import (
    MaskSizeError,
    RleError,
    brush_to_mask,
    brush_to_rle,
    decode_rle,
    encode_rle,
    mask_iou,
    mask_to_brush,
    rle_area,
    rle_bbox,
    rle_iou,
    rle_to_brush,
)

SIZES = [(1, 1), (1, 17), (13, 1), (7, 5), (32, 32), (31, 47), (96, 128), (120, 160)]


def _random_masks(shape, rng):
    """Empty, full, salt-and-pepper at several densities, and a few filled shapes."""
    h, w = shape
    yield np.zeros(shape, bool)
    yield np.ones(shape, bool)
    for p in (0.02, 0.5, 0.97):
        yield rng.random(shape) < p
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(2):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = rng.uniform(0.5, max(h, w) / 2)
        yield (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    y0, x0 = rng.integers(0, h), rng.integers(0, w)
    m = np.zeros(shape, bool)
    m[y0 : y0 + rng.integers(1, h + 1), x0 : x0 + rng.integers(1, w + 1)] = True
    yield m


def _cases():
    rng = np.random.default_rng(1234)
    for shape in SIZES:
        for i, m in enumerate(_random_masks(shape, rng)):
            yield pytest.param(m, id=f"{shape[0]}x{shape[1]}-{i}")


@pytest.mark.parametrize("mask", list(_cases()))
def test_round_trips_are_exact(mask):
    h, w = mask.shape
    rle = encode_rle(mask)
    assert rle["size"] == [h, w]
    assert isinstance(rle["counts"], str)
    json.dumps(rle)  # JSON-ready as stored
    back = decode_rle(rle, expected_size=(h, w))
    assert back.dtype == bool and back.shape == (h, w) and back.flags.c_contiguous
    np.testing.assert_array_equal(back, mask)

    assert rle_area(rle) == int(mask.sum())
    ys, xs = np.nonzero(mask)
    expected_bbox = ([int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                      int(ys.max() - ys.min() + 1)] if len(xs) else [0, 0, 0, 0])
    assert rle_bbox(rle) == expected_bbox

    brush = mask_to_brush(mask)
    assert all(isinstance(v, int) and 0 <= v <= 255 for v in brush)
    np.testing.assert_array_equal(brush_to_mask(brush, h, w), mask)
    # COCO <-> brush, both ways, exactly.
    assert rle_to_brush(rle) == brush
    assert brush_to_rle(brush, h, w) == rle


def test_iou():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, 10 shared
    assert mask_iou(a, b) == pytest.approx(10 / 30)
    assert rle_iou(encode_rle(a), encode_rle(b)) == pytest.approx(10 / 30)
    assert mask_iou(a, a) == 1.0 == rle_iou(encode_rle(a), encode_rle(a))
    assert mask_iou(a, ~a) == 0.0 == rle_iou(encode_rle(a), encode_rle(~a))
    empty = np.zeros((10, 10), bool)
    # Two empty masks agree (J convention); one empty vs. one not is 0.
    assert mask_iou(empty, empty) == 1.0 == rle_iou(encode_rle(empty), encode_rle(empty))
    assert mask_iou(empty, a) == 0.0 == rle_iou(encode_rle(empty), encode_rle(a))


def test_random_iou_matches_numpy():
    rng = np.random.default_rng(7)
    for shape in [(5, 9), (64, 48)]:
        for _ in range(10):
            a = rng.random(shape) < rng.random()
            b = rng.random(shape) < rng.random()
            assert rle_iou(encode_rle(a), encode_rle(b)) == pytest.approx(mask_iou(a, b), abs=1e-9)


def test_accepts_bytes_counts_uncompressed_counts_and_uint8_masks():
    m = np.zeros((4, 5), np.uint8)
    m[1:3, 2:4] = 1
    rle = encode_rle(m)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode()}
    np.testing.assert_array_equal(decode_rle(as_bytes), m.astype(bool))
    # Uncompressed (column-major run lengths, as COCO iscrowd annotations store them).
    uncompressed = {"size": [4, 5], "counts": [9, 2, 2, 2, 5]}
    np.testing.assert_array_equal(decode_rle(uncompressed), m.astype(bool))
    assert rle_area(uncompressed) == 4


def test_partial_alpha_is_thresholded():
    from label_studio_sdk.converter.brush import encode_rle as ls_encode

    h, w = 3, 4
    alpha = np.array([[0, 50, 127, 128], [129, 200, 255, 0], [255, 255, 1, 254]], np.uint8)
    rgba = np.zeros((h, w, 4), np.uint8)
    rgba[..., 3] = alpha
    brush = ls_encode(rgba.ravel())
    np.testing.assert_array_equal(brush_to_mask(brush, h, w), alpha >= 128)
    np.testing.assert_array_equal(brush_to_mask(brush, h, w, alpha_threshold=1), alpha >= 1)


# --- bad input -------------------------------------------------------------------------------------
@pytest.mark.badinput
def test_mask_of_wrong_size_names_both_sizes():
    mask = np.zeros((48, 64), bool)
    with pytest.raises(MaskSizeError) as err:
        encode_rle(mask, expected_size=(240, 320))
    assert "48x64" in str(err.value) and "240x320" in str(err.value)
    assert err.value.got == (48, 64) and err.value.expected == (240, 320)
    with pytest.raises(MaskSizeError, match="48x64.*240x320"):
        decode_rle(encode_rle(mask), expected_size=(240, 320))
    with pytest.raises(MaskSizeError, match="48x64.*240x320"):
        mask_to_brush(mask, expected_size=(240, 320))
    with pytest.raises(MaskSizeError, match="48x64.*240x320"):
        rle_to_brush(encode_rle(mask), expected_size=(240, 320))
    with pytest.raises(MaskSizeError):
        mask_iou(mask, np.zeros((48, 65), bool))
    with pytest.raises(MaskSizeError):
        rle_iou(encode_rle(mask), encode_rle(np.zeros((48, 65), bool)))
    with pytest.raises(MaskSizeError, match="2-D"):
        encode_rle(np.zeros((2, 3, 4), bool))
    assert isinstance(MaskSizeError((1, 1), (2, 2)), ValueError)


@pytest.mark.badinput
def test_brush_for_another_frame_size_is_refused():
    brush = mask_to_brush(np.ones((48, 64), bool))
    with pytest.raises(MaskSizeError) as err:
        brush_to_mask(brush, 240, 320)
    assert "3072 pixels" in str(err.value) and "240x320" in str(err.value)


@pytest.mark.badinput
def test_rle_that_decodes_to_the_wrong_length_is_refused():
    rle = encode_rle(np.zeros((4, 5), bool))
    with pytest.raises(RleError, match="20 pixels.*5x5 needs 25"):
        decode_rle({"size": [5, 5], "counts": rle["counts"]})
    with pytest.raises(RleError):
        rle_area({"size": [5, 5], "counts": rle["counts"]})
    with pytest.raises(RleError, match="needs 20"):
        decode_rle({"size": [4, 5], "counts": [3, 4]})
    with pytest.raises(RleError, match="invalid character"):
        decode_rle({"size": [4, 5], "counts": "garbage ~"})
    with pytest.raises(RleError):
        decode_rle({"counts": "d0"})
    with pytest.raises(RleError):
        decode_rle({"size": "4x5", "counts": "d0"})


@pytest.mark.badinput
def test_malformed_brush_is_refused():
    good = mask_to_brush(np.random.default_rng(0).random((16, 16)) < 0.5)
    with pytest.raises(RleError, match="too short"):
        brush_to_mask([1, 2], 16, 16)
    with pytest.raises(RleError, match="malformed"):
        brush_to_mask(good[: len(good) // 2], 16, 16)  # header fine, runs cut short
    # A header promising a 4-gigabyte mask is refused before anything is allocated.
    with pytest.raises(MaskSizeError):
        brush_to_mask([0xFF, 0xFF, 0xFF, 0xFC] + good[4:], 16, 16)
    with pytest.raises(RleError, match="whole number"):
        brush_to_mask([0, 0, 0, 3] + good[4:], 16, 16)
