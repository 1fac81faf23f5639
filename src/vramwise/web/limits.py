"""What one request may cost the server: its body's size, a dropped config's size, and a rate per client.

The server is meant for one person's machine (bound to 127.0.0.1 by default), but a page left open on a shared
host, or a script in a loop, must not exhaust it: every bound is checked before any work, and answered with the
API's one-line error body (413 too large, 429 too fast).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# A request is a few dozen options: 256 KiB is far above any honest one and small enough to read into memory.
MAX_BODY_BYTES = 256 * 2**10
# A dropped config.json's text: the largest published configs (a VLM's with its processor keys inlined) are tens of
# KiB; the file reader's own bound (spec/load.py MAX_CONFIG_BYTES, 16 MiB) is for local files a user chose.
MAX_CONFIG_BYTES = 200 * 2**10
# A person editing a form (the page debounces its requests) makes a few per second; a burst covers a page load.
DEFAULT_RATE = 20.0  # requests per second per client address, sustained
DEFAULT_BURST = 60  # requests a client may make at once
MAX_CLIENTS = 4096  # addresses remembered; the least recently seen is forgotten first
# Estimates are pure Python under the GIL: threads beyond a few add no speed, only memory; more requests wait.
DEFAULT_WORKERS = 4
# A catalog estimate takes about a millisecond, a fit search or a hub lookup up to seconds; the caching-allocator
# replay of a large MoE model that does not fit (advice estimates it again per change) can take a minute or more.
# The page answers 503 past this; the command line has no limit.
DEFAULT_TIMEOUT_S = 30.0


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The server's bounds; ``rate`` 0 turns the rate cap off (the load bench)."""

    max_body: int = MAX_BODY_BYTES
    max_config: int = MAX_CONFIG_BYTES
    rate: float = DEFAULT_RATE
    burst: int = DEFAULT_BURST
    workers: int = DEFAULT_WORKERS  # estimates running at once
    timeout: float = DEFAULT_TIMEOUT_S  # seconds an estimate may take before the request is answered 503


class RateCap:
    """A token bucket per client address: ``burst`` tokens, refilled at ``rate`` per second; a request takes one."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # address -> (tokens, when)
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """0 when the request may go ahead (its token taken), else the seconds until a token is there."""
        if self.rate <= 0:
            return 0.0
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.rate)
            if tokens >= 1.0:
                tokens -= 1.0
                wait = 0.0
            else:
                wait = (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
        return wait
