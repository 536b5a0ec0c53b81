"""RFC 9112 §7.1 chunked transfer coding, decoded as bytes arrive.

Here rather than in llhttp because llhttp rejects the optional whitespace the RFC
allows around chunk extensions (`5 ; name = value`), which real servers send.
"""

from __future__ import annotations

MAX_HEAD = 64 * 1024  # status line and headers (and, apart, a chunked body's trailers)
_HEX = b"0123456789abcdefABCDEF"


class ChunkedDecoder:
    """RFC 9112 §7.1 chunked transfer coding, fed as bytes arrive; `feed` returns (data, finished, rest)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0  # bytes of the current chunk's data still to come
        self._state = 0  # 0 size line, 1 data, 2 CRLF after data, 3 trailers

    def feed(self, data: bytes) -> tuple[bytes, bool, bytes]:
        buffer = self._buffer + data if self._buffer else data
        out: list[bytes] = []
        pos, size = 0, len(buffer)
        if self._state == 0:  # whole chunks with a bare size line, the usual shape: a tight loop
            find, append = buffer.find, out.append
            while True:
                end = find(b"\r\n", pos)
                if end < 0 or end - pos > 15:
                    break
                line = buffer[pos:end]
                if not line or line.strip(_HEX):
                    break  # extensions, whitespace or garbage: the general loop below decides
                left = int(line, 16)
                stop = end + 2 + left
                if not left or buffer[stop:stop + 2] != b"\r\n":
                    break
                append(buffer[end + 2:stop])
                pos = stop + 2
        while pos < size:
            if self._state == 1:
                take = min(self._left, size - pos)
                out.append(buffer[pos:pos + take])
                pos += take
                self._left -= take
                if self._left:
                    break
                self._state = 2
            elif self._state == 2:
                if size - pos < 2:
                    break
                if buffer[pos:pos + 2] != b"\r\n":
                    raise ValueError("chunk data not followed by CRLF")
                pos += 2
                self._state = 0
            else:
                end = buffer.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > MAX_HEAD:
                        raise ValueError("chunk line too long")
                    break
                line = buffer[pos:end]
                pos = end + 2
                if self._state == 3:
                    if not line:  # the empty line after the trailers: the body's end
                        self._buffer = b""
                        return b"".join(out), True, buffer[pos:]
                    continue  # a trailer field: not merged into the answer's headers
                semi = line.find(b";")
                digits = line if semi < 0 else line[:semi].rstrip(b" \t")
                if not digits or digits.strip(_HEX) or len(digits) > 15:
                    raise ValueError(f"bad chunk size line {line[:40]!r}")
                left = int(digits, 16)
                if not left:
                    self._state = 3
                    continue
                stop = pos + left
                if buffer[stop:stop + 2] == b"\r\n":  # the whole chunk is here (the usual case)
                    out.append(buffer[pos:stop])
                    pos = stop + 2
                else:
                    self._left = left
                    self._state = 1
        self._buffer = buffer[pos:]
        if self._state == 3 and len(self._buffer) > MAX_HEAD:
            raise ValueError("chunked trailers too long")
        return b"".join(out), False, b""
