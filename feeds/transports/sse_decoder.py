"""Server-sent events decoding, sans-I/O: feed text chunks in, get complete events out.

Follows the WHATWG HTML "Interpreting an event stream" rules: lines end in CRLF, LF or CR
(a CR at the end of a chunk may be the first half of a CRLF); `data:` lines are joined with
LF; one leading space after the colon is dropped; comment lines (starting with ':') are
ignored; a blank line dispatches. Two additions for the StockTwits firehose:

- a line that is a bare JSON object (`{...}`) is an event by itself (the provider has been
  seen sending data both with and without `data:` framing);
- an event, or a line still waiting for its end, larger than `max_event_bytes` is dropped and
  counted, so a hostile or broken stream cannot exhaust memory.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SseEvent", "SseDecoder"]

MAX_EVENT_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class SseEvent:
    data: str
    event: str = "message"
    id: str | None = None
    retry: int | None = None


class SseDecoder:
    def __init__(self, *, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes
        self.oversized = 0  # events dropped for size
        self.last_event_id: str | None = None
        self._partial = ""  # text after the last line end
        self._skip_line = False  # the current line is oversized: discard up to its end
        self._pending_cr = False  # the previous chunk ended in CR: a following LF belongs to it
        self._reset_event()

    def _reset_event(self) -> None:
        self._data: list[str] = []
        self._size = 0
        self._event = ""
        self._retry: int | None = None
        self._oversized_event = False

    def feed(self, text: str) -> list[SseEvent]:
        """Decode a chunk; returns the events it completed."""
        if self._pending_cr and text.startswith("\n"):
            text = text[1:]
        self._pending_cr = text.endswith("\r")
        events: list[SseEvent] = []
        start = 0
        for index, char in enumerate(text):
            if char not in "\r\n":
                continue
            if char == "\n" and index > 0 and text[index - 1] == "\r":
                start = index + 1
                continue  # second half of a CRLF
            line, self._partial = self._partial + text[start:index], ""
            start = index + 1
            if self._skip_line:
                self._skip_line = False
                continue
            event = self._line(line)
            if event is not None:
                events.append(event)
        rest = text[start:]
        if not self._skip_line:
            self._partial += rest
            if len(self._partial.encode()) > self.max_event_bytes:
                self._partial, self._skip_line = "", True
                self._drop_event()
        return events

    def _drop_event(self) -> None:
        if not self._oversized_event:
            self.oversized += 1
        self._data, self._size, self._oversized_event = [], 0, True

    def _line(self, line: str) -> SseEvent | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        if line.startswith("{") and not self._data:
            return SseEvent(data=line)  # a bare JSON line: an event of its own
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            if self._oversized_event:
                return None
            self._size += len(value.encode()) + 1
            if self._size > self.max_event_bytes:
                self._drop_event()
            else:
                self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self._retry = int(value)
        return None

    def _dispatch(self) -> SseEvent | None:
        data, event, retry, dropped = self._data, self._event, self._retry, self._oversized_event
        self._reset_event()
        if dropped or not data:
            return None
        return SseEvent(data="\n".join(data), event=event or "message", id=self.last_event_id, retry=retry)
