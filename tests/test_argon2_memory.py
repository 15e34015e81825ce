"""Argon2id from the pool of pre-faulted buffers: the stock results, bounded, wiped."""

from __future__ import annotations

import os
import threading

import pytest
from argon2.exceptions import HashingError
from argon2.low_level import Type, ffi, hash_secret_raw, lib

from varsling import argon2_memory, crypto
from varsling.app import create_app
from varsling.config import Settings


def stock(secret: bytes, salt: bytes, t: int, m: int, p: int, length: int) -> bytes:
    return hash_secret_raw(secret, salt, t, m, p, length, Type.ID)


def pooled(
    pool: argon2_memory.Argon2Memory, secret: bytes, salt: bytes, t: int, m: int, p: int, n: int
) -> bytes:
    return pool.hash_raw(secret, salt, time_cost=t, memory_kib=m, parallelism=p, length=n)


# (secret, salt, time cost, memory KiB, lanes, output length): Argon2's minimums,
# odd sizes, several lanes, long inputs, and the shipped cost.
CASES = [
    (b"", b"saltsalt", 1, 8, 1, 32),
    (b"x", b"saltsalt", 1, 8, 1, 4),
    (b"password", b"0123456789abcdef", 2, 9, 1, 32),
    (b"password", b"0123456789abcdef", 3, 1000, 1, 32),
    (b"password", b"0123456789abcdef", 1, 1024, 2, 16),
    (b"password", b"0123456789abcdef", 2, 4099, 4, 64),
    (b"\x00\xff" * 40, b"s" * 64, 4, 2048, 8, 32),
    (b"p" * 1000, b"\x00" * 16, 1, 64, 8, 128),
    (b"x" * 32, b"s" * 32, 3, 65536, 1, 32),
]


@pytest.mark.parametrize(("secret", "salt", "t", "m", "p", "n"), CASES)
def test_results_equal_the_stock_function(
    secret: bytes, salt: bytes, t: int, m: int, p: int, n: int
) -> None:
    pool = argon2_memory.Argon2Memory(slots=1)
    first = pooled(pool, secret, salt, t, m, p, n)
    assert first == stock(secret, salt, t, m, p, n)
    # The second run reuses the (wiped) buffer and still gives the same answer.
    assert pooled(pool, secret, salt, t, m, p, n) == first


def test_crypto_argon2id_runs_in_the_pool_and_equals_stock() -> None:
    params = crypto.Argon2Params(time_cost=2, memory_kib=512, parallelism=2)
    argon2_memory.reset_peak()
    assert argon2_memory.usage().peak == 0
    result = crypto.argon2id(b"secret", b"saltsalt", params, length=32)
    assert argon2_memory.usage().peak == 1  # the memory came from a pool buffer
    assert result == stock(b"secret", b"saltsalt", 2, 512, 2, 32)


def test_bad_parameters_fail_as_the_stock_function_does() -> None:
    pool = argon2_memory.Argon2Memory(slots=1)
    for args in ((b"pw", b"short", 1, 8, 1, 32), (b"pw", b"saltsalt", 1, 8, 1, 3)):
        with pytest.raises(HashingError) as ours:
            pooled(pool, *args)
        with pytest.raises(HashingError) as theirs:
            stock(*args)
        assert str(ours.value) == str(theirs.value)
    # A failed run gives its slot back.
    assert pooled(pool, b"pw", b"saltsalt", 1, 8, 1, 32) == stock(b"pw", b"saltsalt", 1, 8, 1, 32)


def test_the_library_constants_are_argon2s() -> None:
    assert argon2_memory._OK == lib.ARGON2_OK
    assert argon2_memory._ALLOCATION_ERROR == lib.ARGON2_MEMORY_ALLOCATION_ERROR
    assert argon2_memory._FLAG_CLEAR_PASSWORD == lib.ARGON2_FLAG_CLEAR_PASSWORD


def test_many_threads_at_once_get_right_answers_with_at_most_slots_in_flight() -> None:
    pool = argon2_memory.Argon2Memory(slots=2)
    threads = 8
    start = threading.Barrier(threads)
    results: dict[int, bytes] = {}

    def run(index: int) -> None:
        start.wait()
        results[index] = pooled(pool, b"secret %d" % index, b"saltsalt", 3, 8192, 1, 32)

    argon2_memory.reset_peak()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert argon2_memory.usage().peak <= 2
    assert argon2_memory.usage().in_flight == 0
    assert len(pool.buffers()) <= 2  # memory bounded by slots, not by threads
    for index in range(threads):
        assert results[index] == stock(b"secret %d" % index, b"saltsalt", 3, 8192, 1, 32)


def test_without_the_bound_the_same_threads_do_overlap() -> None:
    # The check above can fail: with as many slots as threads, runs overlap.
    pool = argon2_memory.Argon2Memory(slots=8)
    start = threading.Barrier(8)

    def run() -> None:
        start.wait()
        pooled(pool, b"secret", b"saltsalt", 3, 8192, 1, 32)

    argon2_memory.reset_peak()
    workers = [threading.Thread(target=run) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert argon2_memory.usage().peak > 2


def test_the_buffer_is_zeroed_after_use() -> None:
    pool = argon2_memory.Argon2Memory(slots=1)
    pooled(pool, b"secret", b"saltsalt", 2, 256, 1, 32)
    (buffer,) = pool.buffers()
    assert buffer.size == 256 * 1024
    assert buffer.view() == bytes(buffer.size)


def test_the_free_callback_wipes_by_itself() -> None:
    # Argon2 normally wipes its memory first; ours must not depend on that.
    buffer = argon2_memory._Buffer(64 * 1024)
    ffi.memmove(buffer.pointer, b"\xa5" * buffer.size, buffer.size)
    assert buffer.view() == b"\xa5" * buffer.size
    argon2_memory.reset_peak()
    argon2_memory._usage.in_flight += 1  # as if allocated
    argon2_memory._free(buffer.pointer, buffer.size)
    assert buffer.view() == bytes(buffer.size)
    buffer.close()


def test_a_larger_memory_cost_grows_the_buffer() -> None:
    pool = argon2_memory.Argon2Memory(slots=1)
    small = pooled(pool, b"secret", b"saltsalt", 1, 64, 1, 32)
    assert [b.size for b in pool.buffers()] == [64 * 1024]
    large = pooled(pool, b"secret", b"saltsalt", 1, 4096, 1, 32)
    assert [b.size for b in pool.buffers()] == [4096 * 1024]
    assert large == stock(b"secret", b"saltsalt", 1, 4096, 1, 32)
    # A smaller cost afterwards runs in the larger buffer.
    assert pooled(pool, b"secret", b"saltsalt", 1, 64, 1, 32) == small
    assert [b.size for b in pool.buffers()] == [4096 * 1024]


def test_a_run_never_gets_a_buffer_smaller_than_it_asks_for() -> None:
    # The allocation callback refuses rather than hand out too little memory.
    small = argon2_memory._Buffer(64 * 1024)
    argon2_memory._current.buffer = small
    try:
        pointer = ffi.new("uint8_t **")
        assert argon2_memory._allocate(pointer, 64 * 1024 + 1) == lib.ARGON2_MEMORY_ALLOCATION_ERROR
        assert pointer[0] == ffi.NULL
    finally:
        argon2_memory._current.buffer = None
        small.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_gets_a_fresh_pool() -> None:
    # A slot held by one of the parent's threads would never be given back in the child.
    crypto.argon2id(b"secret", b"saltsalt", crypto.Argon2Params(1, 64, 1))
    expected = stock(b"secret", b"saltsalt", 1, 64, 1, 32)
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            fresh = not argon2_memory.pool().buffers()
            result = crypto.argon2id(b"secret", b"saltsalt", crypto.Argon2Params(1, 64, 1))
            os.write(writer, (b"1" if fresh else b"0") + result)
        finally:
            os._exit(0)
    os.close(writer)
    answer = os.read(reader, 64)
    os.close(reader)
    os.waitpid(pid, 0)
    assert answer == b"1" + expected


def test_the_concurrency_setting_sizes_the_process_pool(settings: Settings) -> None:
    before = argon2_memory.pool()
    try:
        create_app(settings.model_copy(update={"argon2_concurrency": 3})).state.engine.dispose()
        assert argon2_memory.pool().slots == 3
        create_app(settings).state.engine.dispose()  # unset: one per usable CPU
        assert argon2_memory.pool().slots == argon2_memory.usable_cpus()
    finally:
        argon2_memory.configure(before.slots)


def test_runs_happen_on_the_pools_own_threads_never_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A web worker thread hands its run over and waits: Argon2id runs only on the
    pool's `slots` threads (a run on a thread that had just served a login was about
    50% slower; see the module's notes), and a failure still reaches the caller."""
    pool = argon2_memory.Argon2Memory(slots=2)
    ran_on: list[str] = []
    real_core = argon2_memory.core

    def watched(context: object, kind: int) -> int:
        ran_on.append(threading.current_thread().name)
        result: int = real_core(context, kind)
        return result

    monkeypatch.setattr(argon2_memory, "core", watched)
    callers = [threading.Thread(target=pooled, args=(pool, b"s", b"saltsalt", 1, 64, 1, 32))]
    callers += [threading.Thread(target=pooled, args=(pool, b"t", b"saltsalt", 1, 64, 1, 32))]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert pooled(pool, b"u", b"saltsalt", 1, 64, 1, 32) == stock(b"u", b"saltsalt", 1, 64, 1, 32)
    assert len(ran_on) == 3
    assert all(name.startswith("argon2") for name in ran_on), ran_on
    assert len(set(ran_on)) <= 2
    with pytest.raises(HashingError):
        pooled(pool, b"u", b"salt", 1, 64, 1, 32)  # a salt under 8 bytes, as stock refuses
    pool.close()


def test_the_password_and_salt_stay_alive_while_argon2_reads_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Right before Argon2 reads the context, allocate arrays of the password's and
    salt's sizes filled with other bytes: had the pool let go of its copies (cffi frees
    an array made inside a struct initializer at once), the allocator would hand their
    memory out again and the hash would differ from stock. Under load that happened
    once in 268 submissions: a case code that never opened its case."""
    pool = argon2_memory.Argon2Memory(slots=1)
    real_core = argon2_memory.core
    secret, salt = b"k" * 32, b"s" * 16

    def churn_then_core(context: object, kind: int) -> int:
        junk = [ffi.new("uint8_t[]", b"\xa5" * size) for size in (32, 16) for _ in range(64)]
        result: int = real_core(context, kind)
        del junk
        return result

    monkeypatch.setattr(argon2_memory, "core", churn_then_core)
    for _ in range(20):
        assert pooled(pool, secret, salt, 1, 64, 1, 32) == stock(secret, salt, 1, 64, 1, 32)
    pool.close()
