"""Argon2id with its working memory from a small pool of pre-faulted, wiped buffers.

A stock `argon2.low_level.hash_secret_raw` asks for fresh memory on every call
(64 MiB with the shipped settings): the kernel maps it, faults in and zeroes
16 384 pages, and takes it back afterwards, every login and every submission.
Here Argon2 gets its memory through the reference library's allocation
callbacks (`argon2_context.allocate_cbk` / `free_cbk`, reached through
argon2-cffi's low-level `ffi` and `core`) from a buffer that was mapped and
faulted in once, asked for transparent huge pages, kept out of core dumps,
and wiped after every use.

Argon2id runs on a few threads of its own, one per slot (one per usable CPU by
default), each with its own buffer; a caller hands its run to them and waits
for the answer. So at most `slots` runs are in flight in a process, and a
caller beyond that waits in line. The web server's thread pool has forty
threads; forty 64 MiB buffers would be 2.5 GiB resident and forty concurrent
runs would not finish any sooner on a few cores. So a process never holds more
than `slots` buffers, each as large as the largest memory cost asked for so far
(never more than the 1 GiB parameter ceiling).

Why threads of its own, rather than the caller's thread holding a slot: on the
two-core machine measured, a run on a web worker thread that had just served a
case-code login over HTTP took about 50% longer (150-175 ms instead of
105-115 ms, same buffer, same CPU, all of it CPU time), and the submission
benchmark (bench/argon2_http.py) missed its target for it. On threads that do
nothing but Argon2id, runs take the same time whatever the server did before.
The cause was not pinned down.

Pure like `crypto`: argon2-cffi and the standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, core, error_to_str, ffi

_PAGE = mmap.PAGESIZE
# From argon2.h: ARGON2_OK, ARGON2_MEMORY_ALLOCATION_ERROR and ARGON2_FLAG_CLEAR_PASSWORD.
_OK = 0
_ALLOCATION_ERROR = -22
_FLAG_CLEAR_PASSWORD = 1 << 0


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity, not the whole machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _Buffer:
    """One anonymous mapping, faulted in once, handed to Argon2 and wiped after."""

    def __init__(self, size: int) -> None:
        size = -(-size // _PAGE) * _PAGE  # whole pages
        self.size = size
        self._map = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        # Not MADV_DONTFORK: a forked child could then map something else at this
        # address, and this object's unmapping, whenever it came, would hit that.
        for advice in ("MADV_HUGEPAGE", "MADV_DONTDUMP"):
            if hasattr(mmap, advice):  # Linux; elsewhere the buffer works without them
                # e.g. a kernel without transparent huge pages: the buffer works without.
                with contextlib.suppress(OSError):
                    self._map.madvise(getattr(mmap, advice))
        self._cdata = ffi.from_buffer(self._map)
        self.pointer = ffi.cast("uint8_t *", self._cdata)
        # Touch every page now, so no Argon2 run pays for page faults.
        zero_page = bytes(_PAGE)
        for offset in range(0, size, _PAGE):
            self._map[offset : offset + _PAGE] = zero_page

    def view(self) -> bytes:
        """A copy of the whole buffer (for tests that check the wipe)."""
        return bytes(ffi.buffer(self.pointer, self.size))

    def close(self) -> None:
        self._cdata = None
        self._map.close()


@dataclass
class _Slot:
    buffer: _Buffer | None = None
    busy: bool = False


# The buffer the runner thread's current Argon2 run may use: set while it runs.
_current = threading.local()
_in_use_lock = threading.Lock()


@dataclass
class Usage:
    """Argon2 runs holding memory right now, and the most at once since the last reset."""

    in_flight: int = 0
    peak: int = 0


_usage = Usage()


@ffi.callback("int(uint8_t **, size_t)", onerror=lambda *_: None)  # type: ignore[untyped-decorator]
def _allocate(memory: Any, size: int) -> int:
    memory[0] = ffi.NULL  # the library checks the pointer, not this function's result
    buffer: _Buffer | None = getattr(_current, "buffer", None)
    if buffer is None or size > buffer.size:
        return _ALLOCATION_ERROR
    with _in_use_lock:
        _usage.in_flight += 1
        _usage.peak = max(_usage.peak, _usage.in_flight)
    memory[0] = buffer.pointer
    return 0


@ffi.callback("void(uint8_t *, size_t)", onerror=lambda *_: None)  # type: ignore[untyped-decorator]
def _free(memory: Any, size: int) -> None:
    # The library has already wiped these bytes, unless it was built without
    # FLAG_clear_internal_memory; wipe again so the promise does not depend on its build.
    ctypes.memset(int(ffi.cast("uintptr_t", memory)), 0, size)
    with _in_use_lock:
        _usage.in_flight -= 1


class Argon2Memory:
    """Argon2id runs on `slots` threads of its own, each with a reused, wiped buffer."""

    def __init__(self, slots: int | None = None) -> None:
        self.slots = slots if slots is not None else usable_cpus()
        if self.slots < 1:
            raise ValueError("Argon2 needs at least one slot")
        # Threads are started on first use, so importing this module starts none.
        self._runners = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="argon2")
        self._own = threading.local()  # each runner thread's slot
        self._slots: list[_Slot] = []
        self._lock = threading.Lock()

    def _slot(self) -> _Slot:
        """The calling runner thread's own slot (made on its first run)."""
        slot: _Slot | None = getattr(self._own, "slot", None)
        if slot is None:
            slot = self._own.slot = _Slot()
            with self._lock:
                self._slots.append(slot)
        return slot

    def buffers(self) -> list[_Buffer]:
        """The buffers made so far (the idle ones; for tests and measurements)."""
        with self._lock:
            return [s.buffer for s in self._slots if s.buffer is not None and not s.busy]

    def close(self) -> None:
        """Let the runner threads end once their queued runs are done."""
        self._runners.shutdown(wait=False)

    def hash_raw(
        self,
        secret: bytes,
        salt: bytes,
        *,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        length: int,
    ) -> bytes:
        """What `argon2.low_level.hash_secret_raw(..., type=Type.ID)` returns, byte for byte.

        Runs on one of the pool's threads; the caller waits (in line, when all are busy).
        """
        run = self._runners.submit(
            self._run, secret, salt, time_cost, memory_kib, parallelism, length
        )
        return run.result()

    def _run(
        self,
        secret: bytes,
        salt: bytes,
        time_cost: int,
        memory_kib: int,
        parallelism: int,
        length: int,
    ) -> bytes:
        slot = self._slot()
        needed = memory_kib * 1024
        if slot.buffer is None or slot.buffer.size < needed:
            # A larger memory cost than any before: this slot's buffer grows to it.
            if slot.buffer is not None:
                slot.buffer.close()
                slot.buffer = None
            slot.buffer = _Buffer(needed)
        # Each array the context points to is held by a name of its own until core()
        # has returned: cffi frees an array made inside the context's initializer as
        # soon as that initializer is gone, and Argon2 would then read (and, with
        # FLAG_CLEAR_PASSWORD, wipe) memory that another allocation may already use.
        out = ffi.new("uint8_t[]", length)
        password = ffi.new("uint8_t[]", secret)
        salted = ffi.new("uint8_t[]", salt)
        context = ffi.new(
            "argon2_context *",
            {
                "out": out,
                "outlen": length,
                "pwd": password,
                "pwdlen": len(secret),
                "salt": salted,
                "saltlen": len(salt),
                "secret": ffi.NULL,
                "secretlen": 0,
                "ad": ffi.NULL,
                "adlen": 0,
                "t_cost": time_cost,
                "m_cost": memory_kib,
                "lanes": parallelism,
                "threads": parallelism,
                "version": ARGON2_VERSION,
                "allocate_cbk": _allocate,
                "free_cbk": _free,
                # Our own copy of the secret is wiped as soon as Argon2 has read it.
                "flags": _FLAG_CLEAR_PASSWORD,
            },
        )
        _current.buffer = slot.buffer
        slot.busy = True
        try:
            result = core(context, Type.ID.value)
        finally:
            slot.busy = False
            _current.buffer = None
        if result != _OK:
            raise HashingError(error_to_str(result))
        del password, salted  # alive until here, on purpose
        return bytes(ffi.buffer(out, length))


def usage() -> Usage:
    """A snapshot of how many Argon2 runs hold memory now, and the most at once."""
    with _in_use_lock:
        return Usage(_usage.in_flight, _usage.peak)


def reset_peak() -> None:
    with _in_use_lock:
        _usage.peak = _usage.in_flight


_pool = Argon2Memory()


def pool() -> Argon2Memory:
    """The process's pool (one per process: a forked child starts with a fresh one)."""
    return _pool


def configure(slots: int | None) -> None:
    """Allow `slots` runs at once from now on (None: one per usable CPU).

    The pool is replaced only when the number changes; runs already in flight finish
    in the old one.
    """
    global _pool
    wanted = slots if slots is not None else usable_cpus()
    if wanted != _pool.slots:
        _pool.close()
        _pool = Argon2Memory(wanted)


def _fresh_pool_in_child() -> None:
    # The parent's runner threads do not exist in the child (their queue would never
    # be served), nor would a lock one of them held.
    global _pool, _usage, _in_use_lock
    _in_use_lock = threading.Lock()
    _pool = Argon2Memory(_pool.slots)
    _usage = Usage()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_fresh_pool_in_child)
