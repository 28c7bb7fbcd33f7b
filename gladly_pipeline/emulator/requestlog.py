"""The emulator's log of answered requests, kept compact: one entry is its path's bytes.

A list of (method, path, status) tuples costs about 200 bytes a request; a benchmark at
100k conversations a week makes over 100,000 requests in the process it measures.
"""

from array import array
from collections.abc import Iterator, Sequence


class RequestLog(Sequence):
    """Append-only (method, path, status) entries, read back as tuples, sliceable."""

    def __init__(self) -> None:
        self._paths = bytearray()
        self._ends = array("q")  # where each entry's path ends in _paths
        self._statuses = array("H")
        self._methods = array("B")  # index into _method_names
        self._method_names: list = []

    def append(self, entry: tuple) -> None:
        method, path, status = entry
        if method not in self._method_names:
            self._method_names.append(method)
        self._paths += path.encode("utf-8", "surrogateescape")
        self._ends.append(len(self._paths))
        self._statuses.append(status)
        self._methods.append(self._method_names.index(method))

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._entry(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("request log index out of range")
        return self._entry(index)

    def __iter__(self) -> Iterator:
        return (self._entry(i) for i in range(len(self)))

    def __eq__(self, other) -> bool:
        if not isinstance(other, (list, RequestLog)):
            return NotImplemented
        return list(self) == list(other)

    def _entry(self, index: int) -> tuple:
        start = self._ends[index - 1] if index else 0
        path = self._paths[start:self._ends[index]].decode("utf-8", "surrogateescape")
        return self._method_names[self._methods[index]], path, self._statuses[index]
