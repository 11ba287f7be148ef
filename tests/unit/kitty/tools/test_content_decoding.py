"""BoundedDecoder: Content-Encoding undone in small steps, never past its limit."""

from __future__ import annotations

import gzip
import zlib

import pytest

from kitty.tools._content_decoding import BoundedDecoder, UndecodableBody

TEXT = b"".join(f"line {i} of a page that compresses well\n".encode() for i in range(5000))


def _decode(encoding: str, body: bytes, limit: int, step: int) -> bytes:
    decoder = BoundedDecoder(encoding, limit)
    out = b"".join(decoder.feed(body[i : i + step]) for i in range(0, len(body), step))
    return out + decoder.feed(b"")


@pytest.mark.parametrize("step", [1, 7, 4096, 1 << 20])
@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("", TEXT),
        ("identity", TEXT),
        ("gzip", gzip.compress(TEXT)),
        ("x-gzip", gzip.compress(TEXT[:100]) + gzip.compress(TEXT[100:])),  # two members
        ("deflate", zlib.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)[2:-4]),  # raw deflate, no zlib header
        ("gzip, gzip", gzip.compress(gzip.compress(TEXT))),
        ("deflate, GZIP", gzip.compress(zlib.compress(TEXT))),
    ],
)
def test_any_split_of_the_body_decodes_to_the_same_text(
    encoding: str, body: bytes, step: int
) -> None:
    assert _decode(encoding, body, len(TEXT) + 1, step) == TEXT


@pytest.mark.parametrize("encoding", ["", "gzip", "gzip, gzip"])
def test_no_more_than_the_limit_comes_out(encoding: str) -> None:
    body = TEXT
    for _layer in [c for c in encoding.split(", ") if c]:
        body = gzip.compress(body)
    assert _decode(encoding, body, 1000, 1 << 20) == TEXT[:1000]


def test_trailing_bytes_after_the_stream_are_ignored() -> None:
    assert _decode("gzip", gzip.compress(TEXT) + b"\0\0\0", len(TEXT) + 1, 4096) == TEXT


@pytest.mark.parametrize(
    ("encoding", "says"),
    [("br", "Content-Encoding br"), ("zstd, gzip", "zstd"), ("gzip, " * 4, "4 stacked")],
)
def test_other_codings_are_refused(encoding: str, says: str) -> None:
    with pytest.raises(UndecodableBody, match=says):
        BoundedDecoder(encoding.rstrip(", "), 100)
