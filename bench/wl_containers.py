"""wl_containers: a real program for the suite: CPython (run as /usr/bin/python3, whose object
allocator takes small objects from arenas it gets from malloc, and everything larger from malloc
directly) building and dropping containers: lists of tuples, dicts of strings, sets, nested
lists and a sort, ROUNDS times.

With BENCH_TASK=1, the work runs as a memlimits task under an allocation limit that never
fires, through ctypes (the library must be preloaded): the interpreter itself then runs inside
the task. Prints `elapsed_s=SECONDS task=0|1` like the C workloads.

usage: python3 wl_containers.py [ROUNDS=6] [N=200000] [SEED=1]
"""
import ctypes
import os
import random
import sys
import time


def one_round(n, rng):
    rows = [(i, str(i), float(i) * 0.5) for i in range(n)]
    index = {r[1]: r for r in rows}
    words = {("w%d" % rng.randrange(n)) for _ in range(n // 2)}
    nested = [[j for j in range(i % 17)] for i in range(n // 4)]
    text = " ".join(r[1] for r in rows[: n // 8]).split(" ")
    text.sort(key=lambda s: s[::-1])
    blob = [bytes(rng.randrange(32, 4096)) for _ in range(n // 100)]
    total = len(index) + len(words) + sum(len(x) for x in nested) + len(text) + len(blob)
    del rows, index, words, nested, text, blob
    return total


def work(rounds, n, seed):
    rng = random.Random(seed)
    total = 0
    for _ in range(rounds):
        total += one_round(n, rng)
    return total


def main():
    args = [int(a) for a in sys.argv[1:]]
    rounds = args[0] if len(args) > 0 else 6
    n = args[1] if len(args) > 1 else 200000
    seed = args[2] if len(args) > 2 else 1
    task = os.environ.get("BENCH_TASK", "0") not in ("", "0")
    result = {}

    def body(_arg):
        result["total"] = work(rounds, n, seed)

    start = time.perf_counter()
    if task:
        lib = ctypes.CDLL(None)
        try:
            limit = lib.ml_limit_allocations
        except AttributeError:
            sys.stderr.write("wl_containers: BENCH_TASK=1 but ml_limit_allocations is not loaded\n")
            sys.exit(1)
        callback_type = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
        limit.argtypes = [ctypes.c_uint64, callback_type, ctypes.c_void_p,
                          ctypes.POINTER(ctypes.c_uint64)]
        limit.restype = ctypes.c_int
        allocated = ctypes.c_uint64(0)
        callback = callback_type(body)
        status = limit(ctypes.c_uint64(1 << 62), callback, None, ctypes.byref(allocated))
        if status != 0 or "total" not in result:
            sys.stderr.write("wl_containers: task ended with status %d\n" % status)
            sys.exit(1)
    else:
        body(None)
    end = time.perf_counter()
    print("elapsed_s=%.6f task=%d total=%d" % (end - start, int(task), result["total"]))


if __name__ == "__main__":
    main()
