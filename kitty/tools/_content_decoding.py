"""A response body's ``Content-Encoding`` undone within a byte budget.

httpx decodes each raw read whole, so a compressed bomb (64 MiB of zeros is 64 KB of gzip,
and 273 bytes of ``gzip, gzip``) becomes one huge chunk before any size cap can look at
it. The fetch path asks for ``identity`` and reads raw bytes; a server that encodes anyway
is decoded here, where no layer ever produces more than it is asked for: the last layer
at most the caller's budget, the layers before it at most :data:`STEP` bytes at a time.
Only gzip and deflate (zlib's, and raw deflate) are decoded; any other coding is refused.
"""

from __future__ import annotations

import zlib

__all__ = ["STEP", "BoundedDecoder", "UndecodableBody"]

STEP = 64 * 1024
"""Most bytes one layer hands the next at once (and most raw bytes taken at once)."""
MAX_LAYERS = 3
_GZIP = ("gzip", "x-gzip")
_DEFLATE = ("deflate",)
_NONE = ("", "identity")
_GZIP_MAGIC = b"\x1f\x8b"
_HEAD_MAX = 64  # input bytes after which a zlib header would have failed already


class UndecodableBody(ValueError):
    """The body's encoding is not one this decoder undoes, or its data is broken."""


class _Inflater:
    """One gzip or deflate layer: decodes the input it was given, at most ``n`` bytes a call."""

    def __init__(self, coding: str) -> None:
        self.coding = coding
        self._gzip = coding in _GZIP
        # deflate: zlib-wrapped per RFC 9110, but some servers send raw deflate.
        self._raw_deflate = False
        self._zlib = self._new()
        self._tail = b""
        self._head = b""  # deflate input seen before any output, to retry as raw deflate
        self._started = False
        self._between_members = False  # gzip: a member ended; another may follow
        self._finished = False

    def _new(self) -> zlib._Decompress:
        if self._gzip:
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(-zlib.MAX_WBITS if self._raw_deflate else zlib.MAX_WBITS)

    @property
    def hungry(self) -> bool:
        """True when it cannot go on without more input (everything given is decoded)."""
        if self._finished or not self._tail:
            return True
        return self._between_members and len(self._tail) < len(_GZIP_MAGIC)

    def give(self, data: bytes) -> None:
        """More encoded input (only when :attr:`hungry`, so the buffer stays small)."""
        if not self._finished:
            self._tail += data

    def take(self, n: int) -> bytes:
        """Up to ``n`` decoded bytes from the input given so far."""
        out: list[bytes] = []
        while n > 0 and not self.hungry:
            if self._between_members:
                if not self._tail.startswith(_GZIP_MAGIC):
                    self._finished = True  # trailing bytes after the last member: ignored
                    break
                self._between_members = False
                self._zlib = self._new()
            before = self._tail
            try:
                piece = self._zlib.decompress(self._tail, n)
            except zlib.error:
                if self._gzip or self._started or self._raw_deflate:
                    raise UndecodableBody(f"its body is not valid {self.coding} data") from None
                self._raw_deflate = True  # no zlib header: try raw deflate once
                self._zlib = self._new()
                self._tail = self._head + self._tail
                continue
            if not self._started and not self._gzip and not self._raw_deflate:
                consumed = len(before) - len(self._zlib.unconsumed_tail)
                self._head += before[:consumed]
                self._started = bool(piece) or len(self._head) > _HEAD_MAX
                if self._started:
                    self._head = b""
            self._tail = self._zlib.unconsumed_tail
            if self._zlib.eof:
                self._tail = self._zlib.unused_data + self._tail
                # gzip allows several members in a row; deflate ends with its stream.
                self._between_members = self._gzip
                self._finished = not self._gzip
            out.append(piece)
            n -= len(piece)
            if not piece and self._tail == before and not self._zlib.eof:
                break  # no progress
        return b"".join(out)


class BoundedDecoder:
    """Decodes a body sent with ``content_encoding``, producing at most ``limit`` bytes.

    Feed raw reads to :meth:`feed`; each call returns the decoded bytes it made, and all
    calls together return at most ``limit`` bytes. Memory held is about ``limit`` plus
    :data:`STEP` per layer, whatever the compression ratio.

    Raises:
        UndecodableBody: From the constructor when the coding is not gzip, deflate or
            identity (or more than :data:`MAX_LAYERS` are stacked), from :meth:`feed`
            when the data is not valid for its coding.
    """

    def __init__(self, content_encoding: str, limit: int) -> None:
        codings = [c.strip().lower() for c in content_encoding.split(",")]
        codings = [c for c in codings if c not in _NONE]
        unknown = [c for c in codings if c not in _GZIP + _DEFLATE]
        if unknown:
            raise UndecodableBody(
                f"it sent Content-Encoding {', '.join(unknown)} although only identity was "
                "asked for; only gzip and deflate are decoded (within the size cap)"
            )
        if len(codings) > MAX_LAYERS:
            raise UndecodableBody(
                f"it sent {len(codings)} stacked content encodings ({content_encoding}); "
                f"at most {MAX_LAYERS} are decoded"
            )
        # Applied in the order listed, so undone in reverse.
        self._layers = [_Inflater(c) for c in reversed(codings)]
        self._raw = b""
        self._room = limit

    def feed(self, raw: bytes) -> bytes:
        """The decoded bytes ``raw`` (with what came before) yields, within the limit."""
        if not self._layers:
            out = raw[: self._room]
        else:
            self._raw += raw
            out = self._take(len(self._layers) - 1, self._room)
        self._room -= len(out)
        return out

    def _take(self, index: int, n: int) -> bytes:
        """Up to ``n`` bytes out of layer ``index``, pulling its input from the one before."""
        layer = self._layers[index]
        out: list[bytes] = []
        wanted = n
        while wanted > 0:
            piece = layer.take(wanted)
            out.append(piece)
            wanted -= len(piece)
            if wanted <= 0 or not layer.hungry:
                if not piece:
                    break
                continue
            more = self._take(index - 1, STEP) if index else self._take_raw(STEP)
            if not more:
                break
            layer.give(more)
        return b"".join(out)

    def _take_raw(self, n: int) -> bytes:
        taken, self._raw = self._raw[:n], self._raw[n:]
        return taken
