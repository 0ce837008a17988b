"""IDX and KJV readers on small files the tests write."""

import gzip

import numpy as np
import pytest

from lopt.data import IdxFormatError, read_idx, read_kjv

pytestmark = pytest.mark.strict_promotion


def _idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    header = bytes([0, 0, type_byte, array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def images():
    return np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)


def test_idx_round_trip_raw_gz_and_bytes(tmp_path, images):
    raw = tmp_path / "x-idx3-ubyte"
    raw.write_bytes(_idx_bytes(images))
    gz = tmp_path / "x-idx3-ubyte.gz"
    gz.write_bytes(gzip.compress(_idx_bytes(images)))
    for out in (read_idx(raw), read_idx(str(gz)), read_idx(_idx_bytes(images))):
        assert out.dtype == np.uint8 and out.shape == (3, 4, 5)
        np.testing.assert_array_equal(out, images)


def test_idx_labels_and_wider_types(tmp_path):
    labels = np.array([5, 0, 4, 1, 9], np.uint8)
    np.testing.assert_array_equal(read_idx(_idx_bytes(labels)), labels)
    ints = np.array([[1, -2], [300000, 7]], np.int32)
    out = read_idx(_idx_bytes(ints, 0x0C))
    assert out.dtype == np.dtype(np.int32) and out.dtype.isnative
    np.testing.assert_array_equal(out, ints)


def test_idx_bad_magic_names_the_file(tmp_path, images):
    bad = tmp_path / "bad-idx3-ubyte"
    bad.write_bytes(b"\x08\x03\x00\x00" + _idx_bytes(images)[4:])
    with pytest.raises(IdxFormatError, match="bad-idx3-ubyte.*bad magic number"):
        read_idx(bad)
    with pytest.raises(IdxFormatError, match="member.*bad magic"):
        read_idx(b"PK\x03\x04", name="member")


def test_idx_truncated_names_the_file(tmp_path, images):
    short = tmp_path / "short-idx3-ubyte.gz"
    short.write_bytes(gzip.compress(_idx_bytes(images)[:-7]))
    with pytest.raises(IdxFormatError, match=r"short-idx3-ubyte.gz.*\(3, 4, 5\).*truncated"):
        read_idx(short)


KJV_DUMP = """
Genesis 1

  1 In the beginning God created the heaven and the earth.
  2 And the earth was without form, and void.

Genesis 2

  1 Thus the heavens and the earth were finished.
 10 And a river went out of Eden; 12 cubits.
Revelation 22 21
"""


def test_kjv_cleaner_drops_headings_and_strips_numbers():
    text = read_kjv(KJV_DUMP)
    assert text.splitlines() == [
        "In the beginning God created the heaven and the earth.",
        "And the earth was without form, and void.",
        "Thus the heavens and the earth were finished.",
        "And a river went out of Eden; 12 cubits.",
    ]
    assert text.endswith(".\n") and "Genesis" not in text
