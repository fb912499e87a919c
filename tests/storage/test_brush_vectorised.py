"""storage.masks.mask_to_brush (numpy) writes exactly the bytes of the SDK's mask2rle."""
from __future__ import annotations

import numpy as np
import pytest
from label_studio_sdk.converter.brush import mask2rle

from storage.masks import brush_to_mask, mask_to_brush


def _sdk(mask: np.ndarray) -> list[int]:
    return [int(v) for v in mask2rle(mask.astype(np.uint8) * np.uint8(255))]


EDGE_CASES = [
    np.zeros((1, 1), bool), np.ones((1, 1), bool), np.zeros((5, 7), bool), np.ones((5, 7), bool),
    np.ones((128, 128), bool),  # one run of 65,536 bytes: exactly one 16-bit piece
    np.ones((64, 257), bool),  # 65,792 bytes: a full piece and a short remainder
    np.ones((300, 300), bool),  # several pieces
    np.zeros((256, 257), bool),
]


@pytest.fixture(params=["per-run", "vectorised"])
def coder(request, monkeypatch):
    """Both ways the encoder codes runs (few runs: a Python step per run; many: numpy)."""
    from storage import brush_rle

    monkeypatch.setattr(brush_rle, "_PY_RUNS", 10**9 if request.param == "per-run" else 0)
    return request.param


@pytest.mark.parametrize("mask", EDGE_CASES, ids=lambda m: f"{m.shape}-{int(m.any())}")
def test_edge_cases_match_the_sdk(mask, coder):
    assert mask_to_brush(mask) == _sdk(mask)


def test_any_byte_values_match_the_sdk(coder):
    from label_studio_sdk.converter.brush import encode_rle

    from storage import brush_rle

    rng = np.random.default_rng(9)
    for n in (1, 2, 9, 17, 257, 3000, 70_000, 140_000):
        arr = rng.integers(0, 256, n).astype(np.uint8)
        arr[: max(n // 2, n - 1500)] = 3  # a long run (16-bit pieces from 65,537 on)
        assert brush_rle.encode(arr) == [int(v) for v in encode_rle(arr)]


@pytest.mark.parametrize("density", [0.001, 0.02, 0.3, 0.5, 0.97, 0.9995])
def test_random_masks_match_the_sdk_byte_for_byte(density, coder):
    rng = np.random.default_rng(int(density * 10000))
    for _ in range(6):
        h, w = (int(v) for v in rng.integers(1, 160, 2))
        m = rng.random((h, w)) < density
        # runs of every length class: single pixels, short, medium and long runs
        if h * w > 40:
            r = int(rng.integers(0, h))
            m[r, : int(rng.integers(1, w + 1))] = rng.random() < 0.5
        got = mask_to_brush(m)
        assert got == _sdk(m)
        assert (brush_to_mask(got, h, w) == m).all()


def test_rectangles_and_sizes_are_checked():
    m = np.zeros((48, 64), bool)
    m[10:30, 5:60] = True
    assert mask_to_brush(m, expected_size=(48, 64)) == _sdk(m)
    with pytest.raises(ValueError):
        mask_to_brush(m, expected_size=(64, 48))


# --- the decoder: storage.brush_rle.decode == the SDK's decode_rle, for every input ---------------
from label_studio_sdk.converter.brush import decode_rle as sdk_decode  # noqa: E402
from label_studio_sdk.converter.brush import encode_rle as sdk_encode  # noqa: E402

from storage import brush_rle  # noqa: E402


@pytest.fixture
def no_fallback(monkeypatch):
    """Well-formed streams must take the numpy path, not the SDK fallback."""
    def fail(data):
        raise AssertionError("fell back to the SDK decoder")

    monkeypatch.setattr(brush_rle, "_sdk_decode", fail)


def _outcome(fn, data):
    """What decoding gives: ("ok", array) or ("error", exception class)."""
    try:
        out = fn(data)
    except Exception as exc:  # noqa: BLE001 - comparing failures is the point
        return "error", type(exc)
    return "ok", out


def _assert_same(data):
    got, want = _outcome(brush_rle.decode, data), _outcome(sdk_decode, data)
    assert got[0] == want[0], (got, want)
    if want[0] == "ok":
        assert got[1].dtype == want[1].dtype == np.uint8
        np.testing.assert_array_equal(got[1], want[1])
    else:
        assert got[1] is want[1]


def _pack(fields: list[tuple[int, int]]) -> bytes:
    """(value, bits) fields -> bytes, zero-padded to a whole byte (like the encoders)."""
    acc, n = 0, 0
    for v, b in fields:
        acc = (acc << b) | (v & ((1 << b) - 1))
        n += b
    pad = 8 - n % 8
    return (acc << pad).to_bytes((n + pad) // 8, "big")


def _editor_stream(values: np.ndarray, word: int, sizes: tuple[int, ...], rng) -> bytes:
    """A stream as Label Studio's editor (thi.ng/rle-pack) may write it: any word size and field
    sizes, runs AND groups of literal values (the SDK's encoder only writes single literals)."""
    fields = [(values.size, 32), (word - 1, 5)] + [(s - 1, 4) for s in sizes]
    i = 0
    while i < values.size:
        idx = int(rng.integers(0, 4))
        most = 1 << sizes[idx]
        j = i + 1
        while j < values.size and values[j] == values[i] and j - i < most:
            j += 1
        if j - i > 1 or rng.random() < 0.3:
            fields += [(1, 1), (idx, 2), (j - i - 1, sizes[idx]), (int(values[i]), word)]
        else:  # a group of literals
            j = min(values.size, i + int(rng.integers(1, most + 1)))
            fields += [(0, 1), (idx, 2), (j - i - 1, sizes[idx])]
            fields += [(int(v), word) for v in values[i:j]]
        i = j
    return _pack(fields)


@pytest.mark.parametrize("mask", EDGE_CASES, ids=lambda m: f"{m.shape}-{int(m.any())}")
def test_decoder_matches_the_sdk_on_edge_cases(mask, no_fallback):
    rle = mask_to_brush(mask)
    _assert_same(bytes(rle))
    np.testing.assert_array_equal(brush_rle.decode(rle), sdk_decode(bytes(rle)))  # list input


@pytest.mark.parametrize("density", [0.0, 0.001, 0.05, 0.5, 0.95, 1.0])
def test_decoder_matches_the_sdk_on_random_masks_and_sizes(density, no_fallback):
    rng = np.random.default_rng(int(density * 1000) + 7)
    for _ in range(8):
        h, w = (int(v) for v in rng.integers(1, 200, 2))  # odd sizes included
        m = rng.random((h, w)) < density
        if 0 < density < 1 and h > 2:
            m[: h // 2, : int(rng.integers(1, w + 1))] = rng.random() < 0.5  # long runs too
        _assert_same(bytes(mask_to_brush(m)))


def test_decoder_matches_the_sdk_on_partial_alpha_and_any_byte_values(no_fallback):
    rng = np.random.default_rng(11)
    for n in (1, 2, 7, 8, 9, 16, 17, 256, 257, 3001):
        for levels in (2, 5, 256):
            arr = (rng.integers(0, levels, n) * (255 // max(levels - 1, 1))).astype(np.uint8)
            if n > 100:  # long runs of every length class
                arr[: n // 3] = arr[0]
            _assert_same(bytes(sdk_encode(arr)))
    for n in (65536, 65537, 140_000):  # runs split into 16-bit pieces
        arr = np.zeros(n, np.uint8)
        arr[n // 2: n // 2 + 3] = [7, 255, 128]
        _assert_same(bytes(sdk_encode(arr)))


def test_decoder_reads_streams_with_literal_groups_and_other_word_and_field_sizes(no_fallback):
    rng = np.random.default_rng(5)
    for word in (1, 3, 8):
        for sizes in ((3, 4, 8, 16), (1, 2, 3, 4), (16, 16, 16, 16), (5, 1, 9, 2)):
            for n in (1, 3, 40, 1000):
                values = rng.integers(0, 1 << word, n, dtype=np.int64)
                values[n // 2:] = values[-1]  # and a long run
                data = _editor_stream(values, word, sizes, rng)
                _assert_same(data)
                np.testing.assert_array_equal(brush_rle.decode(data), values.astype(np.uint8))


@pytest.mark.badinput
def test_decoder_fails_or_not_exactly_like_the_sdk_on_malformed_streams():
    rng = np.random.default_rng(3)
    good = bytes(mask_to_brush(rng.random((24, 20)) < 0.4))
    for cut in range(len(good) + 1):  # every truncation, the empty stream included
        _assert_same(good[:cut])
    runs = bytes(mask_to_brush(np.ones((3, 3), bool)))
    _assert_same(runs + b"\xff" * 5)  # trailing garbage after the last code is ignored
    for _ in range(150):  # flipped bytes with a small count in the header
        data = bytearray(good)
        for i in rng.integers(4, len(data), int(rng.integers(1, 4))):
            data[i] = int(rng.integers(0, 256))
        data[:4] = int(rng.integers(0, 3000)).to_bytes(4, "big")
        _assert_same(bytes(data))
    for word in (9, 16, 32):  # words over 8 bits: values that do / do not fit a byte
        for value in (5, 300):
            _assert_same(_pack([(2, 32), (word - 1, 5), (2, 4), (3, 4), (7, 4), (15, 4),
                                (1, 1), (0, 2), (1, 3), (value, word)]))
    # a literal group longer than the count: the SDK writes past its array and raises
    _assert_same(_pack([(2, 32), (7, 5), (2, 4), (3, 4), (7, 4), (15, 4), (0, 1), (0, 2), (2, 3),
                        (1, 8), (2, 8), (3, 8)]))
    # list input with values outside 0..255: only the low 8 bits count, as in the SDK
    as_list = [v + 256 * int(rng.integers(-2, 3)) for v in good]
    np.testing.assert_array_equal(brush_rle.decode(as_list), sdk_decode(as_list))
