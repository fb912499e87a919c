"""Label Studio's brush RLE, vectorised with numpy: the same bytes and arrays as
``label_studio_sdk.converter.brush.encode_rle`` / ``decode_rle``, without their per-bit Python
(string building, one ``int(str, 2)`` per field). ``storage.masks`` turns masks into these byte
streams and back; this module only knows the stream.

The format (thi.ng/rle-pack, what the editor writes): a 32-bit count of values, the word size - 1
(5 bits), four run-length field sizes - 1 (4 bits each), then codes until ``count`` values are out:
``1 ii <n - 1 in size[ii] bits> <value>`` is a run of n copies of one value, ``0 ii <n - 1> <value>
x n`` is n values as they are. The SDK's encoder writes word size 8 and sizes 3, 4, 8, 16, and
only single literals; the editor also writes literal groups.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["as_bytes", "decode", "encode"]

# The SDK's encoder settings: 8-bit words, run-length fields of 3, 4, 8 and 16 bits.
_HEADER_TAIL = ((8 - 1, 5), (3 - 1, 4), (4 - 1, 4), (8 - 1, 4), (16 - 1, 4))
_HEADER_BITS = 32 + 5 + 4 * 4
_HEAD_SHIFTS = np.arange(13, 5, -1, dtype=np.int64)  # 32 - offset in byte - 19, offsets 0..7


# Up to this many runs, one Python step per run (into one big int) beats the ~45 numpy calls of
# the vectorised coder (a 128x128 object mask has ~70 runs: ~3x faster); from ~500 runs on numpy
# wins (the big int is copied on every step).
_PY_RUNS = 400


def encode(flat: np.ndarray, repeat: int = 1) -> list[int]:
    """``label_studio_sdk.converter.brush.encode_rle(np.repeat(flat, repeat))`` (wordsize 8),
    byte for byte (runs are found on ``flat``; repeating every value multiplies them): the same
    codes (a run of 1: ``0 00 000`` + value; 2-8: ``1 00`` + 3 bits; 9-16: ``1 01`` + 4 bits;
    17-256: ``1 10`` + 8 bits; longer: ``1 11`` + 16 bits per piece of at most 65,536), the same
    header and the same padding (1 to 8 zero bits, a whole zero byte when already aligned)."""
    ends = np.append(np.flatnonzero(flat[1:] != flat[:-1]), flat.size - 1)
    lengths = np.diff(np.append(-1, ends)).astype(np.int64) * repeat
    n = int(flat.size) * repeat
    if lengths.size <= _PY_RUNS:
        return _encode_runs(lengths.tolist(), flat[ends].tolist(), n)
    return _encode_runs_vectorised(lengths, flat[ends].astype(np.uint64), n)


def _encode_runs(lengths: list[int], values: list[int], n: int) -> list[int]:
    """The codes of a few runs appended to one Python int (what ``encode`` does for them)."""
    acc = n
    for value, bits in _HEADER_TAIL:
        acc = (acc << bits) | value
    nbits = _HEADER_BITS
    for L, v in zip(lengths, values):
        if L == 1:
            acc, nbits = (acc << 14) | v, nbits + 14
        elif L <= 8:
            acc, nbits = (acc << 14) | (0b100 << 11) | ((L - 1) << 8) | v, nbits + 14
        elif L <= 16:
            acc, nbits = (acc << 15) | (0b101 << 12) | ((L - 1) << 8) | v, nbits + 15
        elif L <= 256:
            acc, nbits = (acc << 19) | (0b110 << 16) | ((L - 1) << 8) | v, nbits + 19
        else:  # pieces of 65,536; the last one (the rest) is written with 16 bits as well
            while L > 65536:
                acc, nbits = (acc << 27) | (0b111 << 24) | (65535 << 8) | v, nbits + 27
                L -= 65536
            acc, nbits = (acc << 27) | (0b111 << 24) | ((L - 1) << 8) | v, nbits + 27
    pad = 8 - nbits % 8
    return list((acc << pad).to_bytes((nbits + pad) // 8, "big"))


def _encode_runs_vectorised(lengths: np.ndarray, values: np.ndarray, n: int) -> list[int]:
    """The same codes for many runs, computed with numpy."""
    big = lengths > 256
    reps = np.where(big, (lengths - 1) // 65536 + 1, 1)
    run = np.repeat(np.arange(lengths.size), reps)
    first = np.repeat(np.cumsum(reps) - reps, reps)
    piece = np.arange(run.size) - first  # 0 .. reps-1 within a run
    L = lengths[run]
    last = piece == reps[run] - 1
    is_big = big[run]
    plen = np.where(is_big, np.where(last, L - (reps[run] - 1) * 65536, 65536), L).astype(np.uint64)
    v = values[run]
    one = np.uint64(1)
    code = np.where(
        is_big, (((np.uint64(0b111) << np.uint64(16)) | (plen - one)) << np.uint64(8)) | v,
        np.where(L > 16, (((np.uint64(0b110) << np.uint64(8)) | (plen - one)) << np.uint64(8)) | v,
                 np.where(L > 8, (((np.uint64(0b101) << np.uint64(4)) | (plen - one)) << np.uint64(8)) | v,
                          np.where(L > 1, (((np.uint64(0b100) << np.uint64(3)) | (plen - one)) << np.uint64(8)) | v,
                                   v))))
    nbits = np.where(is_big, 27, np.where(L > 16, 19, np.where(L > 8, 15, 14))).astype(np.int64)
    header = [(n, 32)] + list(_HEADER_TAIL)
    code = np.concatenate([np.array([c for c, _ in header], dtype=np.uint64), code])
    nbits = np.concatenate([np.array([b for _, b in header], dtype=np.int64), nbits])
    starts = np.cumsum(nbits) - nbits
    total = int(nbits.sum())
    owner = np.repeat(np.arange(code.size), nbits)
    shift = (nbits[owner] - 1 - (np.arange(total) - starts[owner])).astype(np.uint64)
    bits = ((code[owner] >> shift) & one).astype(np.uint8)
    bits = np.concatenate([bits, np.zeros(8 - total % 8, dtype=np.uint8)])
    return np.packbits(bits).tolist()


# --- decoding -----------------------------------------------------------------------------------
def _sdk_decode(data: bytes) -> np.ndarray:
    from label_studio_sdk.converter.brush import decode_rle

    return decode_rle(data)


def as_bytes(rle: bytes | bytearray | Sequence[int] | np.ndarray) -> np.ndarray:
    """uint8 view of an RLE given as bytes or as a list of byte values (the SDK reads only the
    low 8 bits of each, as ``int(v) & 0xFF`` does)."""
    if isinstance(rle, bytes | bytearray | memoryview):
        return np.frombuffer(rle, dtype=np.uint8)
    if isinstance(rle, np.ndarray) and rle.dtype == np.uint8:
        return rle.ravel()
    if not isinstance(rle, str):  # a str is no RLE: fail (or not) like int(v) on each character
        try:
            return np.array(rle, dtype=np.uint8).ravel()  # byte values: the usual case
        except (OverflowError, TypeError, ValueError):
            pass
    return np.frombuffer(bytes(int(v) & 0xFF for v in rle), dtype=np.uint8)


def decode(rle: bytes | bytearray | Sequence[int] | np.ndarray) -> np.ndarray:
    """``label_studio_sdk.converter.brush.decode_rle(rle)``: uint8[count], equal for every input.

    Codes have variable lengths, so where one starts depends on all before it. Every bit position
    after the header is read at once as if a code started there (flag, field size, length, hence
    where the next code would start); then the real codes are picked out by following those "next"
    links from the first code (one list lookup per code, no bit work), and their values are read
    and expanded at once. A stream this does not cover exactly (cut short, words over 8 bits, a
    literal group past the end: malformed, Label Studio never writes them) goes to the SDK's own
    decoder, so such input fails, or not, exactly as there. Like the SDK, this allocates the
    ``count`` the header claims: check it first (``storage.masks.brush_to_mask`` does)."""
    buf = as_bytes(rle)
    n_bits = buf.size * 8
    if n_bits < _HEADER_BITS + 3:
        return _sdk_decode(buf.tobytes())
    count = int.from_bytes(buf[:4].tobytes(), "big")
    h = int.from_bytes(buf[4:7].tobytes(), "big")  # bits 32..55: word size and field sizes
    word = ((h >> 19) & 0x1F) + 1
    sizes = np.array([((h >> s) & 0xF) + 1 for s in (15, 11, 7, 3)], dtype=np.int64)
    if count == 0:
        return np.zeros(0, dtype=np.uint8)
    if word > 8:  # values need not fit the SDK's uint8 output (it raises or wraps): its call
        return _sdk_decode(buf.tobytes())

    # win[b]: the 32 bits from byte b on (zeros past the end); heads[p]: the 19 bits from bit p on
    # (a code's flag, size index and up to 16 bits of length), for every p at once.
    padded = np.concatenate([buf, np.zeros(3, np.uint8)])
    idx = np.int32 if n_bits < 2**31 - 64 else np.int64  # half the memory traffic of int64
    win = np.ndarray((buf.size,), dtype=">u4", buffer=padded, strides=(1,)).astype(np.int64)
    heads = ((win[:, None] >> _HEAD_SHIFTS) & 0x7FFFF).astype(idx).ravel()[_HEADER_BITS:]
    pos = np.arange(_HEADER_BITS, n_bits, dtype=idx)
    flag = heads >> 18  # 1: a run of one value, 0: a group of literal values
    size = sizes.astype(idx)[(heads >> 16) & 3]
    n = ((heads >> (16 - size)) & ((1 << size) - 1)) + 1  # values the code writes
    head_len = size + 3
    end = pos + head_len + np.where(flag == 1, word, n * word)  # where the next code starts

    # Follow the codes from the first one (one lookup each); one ending past the stream ends it.
    nxt = end.item
    chain = []
    i, stop = _HEADER_BITS, n_bits
    while i < stop:
        chain.append(i)
        i = nxt(i - _HEADER_BITS)
    codes = np.array(chain, dtype=idx) - _HEADER_BITS
    done = np.cumsum(n[codes], dtype=np.int64)
    if done[-1] < count:  # the stream ends before `count` values: the SDK's partial reads
        return _sdk_decode(buf.tobytes())
    used = codes[: int(np.searchsorted(done, count)) + 1]
    last = used[-1]
    if end[last] > n_bits or (flag[last] == 0 and done[used.size - 1] > count):
        return _sdk_decode(buf.tobytes())  # a code cut short, or literals past `count`: SDK

    # Values: one per run, n per literal group, `word` bits each after their code's head.
    is_run = flag[used] == 1
    items = np.where(is_run, 1, n[used])
    code_of = np.repeat(np.arange(used.size), items)
    k = np.arange(code_of.size) - np.repeat(np.cumsum(items) - items, items)
    at = (pos[used] + head_len[used])[code_of].astype(np.int64) + k * word
    values = ((win[at >> 3] >> (32 - (at & 7) - word)) & ((1 << word) - 1)).astype(np.uint8)
    copies = np.where(is_run, n[used], 1)[code_of]
    return np.repeat(values, copies)[:count]
