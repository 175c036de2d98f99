from array import array
from datetime import datetime

def epoch_ms(dt: datetime, /) -> int:
    """``round(dt.timestamp() * 1000)``: milliseconds since the epoch."""

def recent_match(flat: array[int], h: int, t_ms: int, /) -> int:
    """In (hash, ts) pairs, oldest first: 1 if the first pair matching either has hash ``h``,
    2 if it has ts ``t_ms``, 0 if none matches."""

def fix_hash(fix_id: str, /) -> int:
    """A 48-bit hash of a fix id: its 6-byte BLAKE2b digest (of the UTF-8), read big-endian."""
