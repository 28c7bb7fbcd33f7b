"""Client-side request pacing: keeps one process under a configured request rate."""

import threading
import time
from collections.abc import Callable


class RateLimiter:
    """Spaces requests evenly at `rate` per second, shared by every thread of a client.

    Gladly's limit (10 requests per second) is per organisation and shared with the
    customer's other tools, so we pace below it rather than bursting into 429s.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if rate <= 0:
            raise ValueError(f"request rate must be positive, got {rate}")
        self.interval = 1.0 / rate
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._next_slot = clock()

    def acquire(self) -> float:
        """Blocks until the caller may send; returns the seconds waited."""
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + self.interval
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def pause(self, seconds: float) -> None:
        """Pushes every later request back, e.g. when Gladly says the second is used up."""
        with self._lock:
            self._next_slot = max(self._next_slot, self._clock() + seconds)
