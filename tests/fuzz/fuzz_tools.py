"""What the fuzz tests share: byte mutations, the per-example guard, and the run length.

A reader passes a fuzz example when it returns or raises a `LungCancerError`. Anything else
fails the example: another exception, a read that takes longer than `READ_SECONDS` (a hang),
or a read whose resident memory grew by more than `READ_BUDGET_MB` (a mutated header that made
the reader trust a size the file cannot back). Address space alone is not counted: pydicom asks
Python for a buffer of an element's declared length and gives it back untouched, which costs no
memory; a cap on address space (`ADDRESS_CAP_MB` beyond the current size) only stops a runaway
reader before it takes the machine down with it.

`FUZZ_EXAMPLES=5000 pytest tests/fuzz` runs a long, randomised campaign; without it the
examples are few and derandomised so CI always runs the same ones.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from types import FrameType

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st

from lungcancer.errors import LungCancerError

READ_SECONDS = 10.0
READ_BUDGET_MB = 1024
ADDRESS_CAP_MB = 6144
# The values that break size and count arithmetic most often.
EDGE_INTS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
GARBAGE_TEXT = (
    "",
    " ",
    "0",
    "-1",
    "-0",
    "nan",
    "inf",
    "-inf",
    "1e308",
    "-1e308",
    "1e-320",
    "99999999999999999999",
    "4294967295",
    "65535",
    "abc",
    "1\\2\\3\\4\\5\\6\\7",
    "1\\nan\\3",
    "0\\0\\0\\0\\0\\0",
    "\x00\x00",
    "\xff\xfe",
    "../../../../etc/passwd",
    "/dev/zero",
    "/dev/urandom",
    '"',
    "a,b,c",
    "x" * 300,
)


def fuzz_settings(default_examples: int) -> settings:
    """Hypothesis settings: `default_examples` derandomised, or `FUZZ_EXAMPLES` random ones."""
    long_run = int(os.environ.get("FUZZ_EXAMPLES", "0") or 0)
    return settings(
        max_examples=long_run or default_examples,
        deadline=None,
        derandomize=not long_run,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


class ReaderHangError(Exception):
    """A read ran past `READ_SECONDS`."""


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so each read gets its own peak.
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def _peak_rss_kb() -> int:
    peak = _status_kb("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _memory_refusal(exc: BaseException) -> bool:
    """Whether a failure came from the address-space cap (possibly wrapped by the reader)."""
    seen: BaseException | None = exc
    while seen is not None:
        text = str(seen).lower()
        if isinstance(seen, MemoryError) or "bad_alloc" in text or "allocate memory" in text:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def bounded() -> Iterator[None]:
    """Run a block under a wall-clock alarm, a resident-memory budget and an address-space cap.

    Raises:
        ReaderHangError: the block ran past `READ_SECONDS`, even if the reader swallowed the alarm.
        AssertionError: resident memory grew by more than `READ_BUDGET_MB`.
    """
    hung = False

    def on_alarm(signum: int, frame: FrameType | None) -> None:
        nonlocal hung
        hung = True
        raise ReaderHangError(f"the read took longer than {READ_SECONDS:g} s")

    previous_handler = signal.signal(signal.SIGALRM, on_alarm)
    previous_limit = resource.getrlimit(resource.RLIMIT_DATA)
    data_kb = _status_kb("VmData") if sys.platform.startswith("linux") else None
    if data_kb is not None:
        cap = (data_kb + ADDRESS_CAP_MB * 1024) * 1024
        hard = previous_limit[1]
        if hard == resource.RLIM_INFINITY or cap <= hard:
            resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    rss_before = _status_kb("VmRSS") if _reset_peak_rss() else None
    rss_before = rss_before if rss_before is not None else _peak_rss_kb()
    signal.setitimer(signal.ITIMER_REAL, READ_SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, previous_handler)
        resource.setrlimit(resource.RLIMIT_DATA, previous_limit)
    if hung:
        raise ReaderHangError(f"the read took longer than {READ_SECONDS:g} s")
    grown_mb = (_peak_rss_kb() - rss_before) / 1024
    if grown_mb > READ_BUDGET_MB:
        raise AssertionError(f"the read grew resident memory by {grown_mb:.0f} MB")


def ends_cleanly(read: Callable[[], object]) -> str:
    """Run `read` under `bounded`; return "read" or "refused" (a `LungCancerError`).

    Raises:
        AssertionError: the reader hit the memory budget or the address-space cap, even if it
            wrapped that failure in its own error.
        ReaderHangError: the read did not finish in time.
        Exception: whatever else the reader raised: the bug the fuzzing looks for.
    """
    outcome = "read"
    try:
        with bounded():
            try:
                read()
            except LungCancerError as exc:
                if _memory_refusal(exc):
                    raise AssertionError(
                        f"the reader ran into the {ADDRESS_CAP_MB} MB address-space cap: {exc}"
                    ) from exc
                outcome = "refused"
    except MemoryError as exc:
        raise AssertionError(
            f"the reader ran into the {ADDRESS_CAP_MB} MB address-space cap on a tiny file"
        ) from exc
    # Shown by --hypothesis-show-statistics: a campaign that only ever refuses tests little.
    event(outcome)
    return outcome


_OPERATIONS = ("flip", "set", "truncate", "insert", "delete", "duplicate", "edge_int")


@st.composite
def mutated(draw: st.DrawFn, data: bytes, hot_bytes: int = 0) -> bytes:
    """`data` after one to four random byte edits.

    Args:
        draw: hypothesis's draw function.
        data: the valid file.
        hot_bytes: when positive, most edits land in the first `hot_bytes` bytes (the header),
            where a change alters how the rest is read rather than a pixel value.
    """
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        size = len(buffer)
        if size == 0:
            buffer.extend(draw(st.binary(min_size=1, max_size=16)))
            continue
        limit = min(hot_bytes, size) if hot_bytes and draw(st.integers(0, 3)) else size
        at = draw(st.integers(0, limit - 1))
        operation = draw(st.sampled_from(_OPERATIONS))
        if operation == "flip":
            buffer[at] ^= draw(st.integers(1, 255))
        elif operation == "set":
            buffer[at] = draw(st.sampled_from((0x00, 0x20, 0x30, 0x39, 0x5C, 0x7F, 0xFF)))
        elif operation == "truncate":
            del buffer[at:]
        elif operation == "insert":
            buffer[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif operation == "delete":
            del buffer[at : at + draw(st.integers(1, 32))]
        elif operation == "duplicate":
            chunk = buffer[at : at + draw(st.integers(1, 64))]
            buffer[at:at] = chunk
        else:
            value = draw(st.sampled_from(EDGE_INTS))
            width = draw(st.sampled_from((2, 4)))
            order = draw(st.sampled_from(("little", "big")))
            buffer[at : at + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, order)
    return bytes(buffer)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and a valid CRC (so only its content is wrong)."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )
