#!/usr/bin/env python3
"""End-to-end tests of calls, entry to return (`ptss trace --latency`, `--events`) and of
offset probes, on calls_target, whose calls, durations, arguments and returns are known:
sleeps of known lengths, recursion, a longjmp out of nested calls, a tail call.

usage: test_calls.py SCENARIO   (test_calls.py --list names them)
"""
import os, re, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tracetest import *  # noqa: F401,F403

PROBES = ["ct_sleep(int)", "ct_fib(int)", "ct_deep(int)", "ct_tail", "ct_leaf",
          "ct_args(str, int, uint, hex, char, bool)"]
RETURNS = re.compile(r"^\w+: returns pid=\d+((?: \w+=\d+)+)$")
ASM = {"ct_tail", "ct_leaf", "ct_offs", "ct_mixed", "ct_mixed2"}  # calls_sites.S: exact shapes
SANITIZED = bool(os.environ.get("PTSS_SANITIZED")) or bool(os.environ.get("PTSS_WRAPPER"))


def said(err, pattern):
    """The target's `returns` line as a dict."""
    for line in err.splitlines():
        m = pattern.match(line)
        if m:
            return {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    fail("the target said nothing")


def by_name(rep):
    return {p["probe"].split(":", 1)[1]: p for p in rep["probes"]}


def run_events(probes, fmt="table"):
    """ptss trace --events, the events and the report in one file: (status, its text, stderr)."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as f:
        p = subprocess.run([*PTSS_CMD, "trace", "-q", "--events", "--format", fmt, "-o", f.name,
                            *probes, "--", T["CALLS_TARGET"], "all"], capture_output=True, text=True,
                           timeout=120)
        return p.returncode, open(f.name).read(), p.stderr


def latency_exact(path):
    """Every entry and every return seen: counts of entries and returns as the target made
    them (recursion, a longjmp out of 6 nested calls, a tail call, a function of one
    instruction and a ret), latency counts equal to the returns, sleep times where they
    belong. path "jump": every call timed in the target, entries and returns by
    trampolines (no stop); "trap": every entry and return stops (--no-optimize)."""
    extra = ["--latency"] + (["--no-optimize"] if path == "trap" else [])
    rc, out, err, rep = trace(PROBES, [T["CALLS_TARGET"], "all"], extra=extra)
    check(rc == 0, f"status {rc}: {err}")
    compare_counts(rep, expected(err), "entries", PROBES)
    got, returns = by_name(rep), said(err, RETURNS)
    for fn, n in returns.items():
        if fn not in got:
            continue
        p = got[fn]
        check(p["returns"] == n, f"{fn}: {p['returns']} returns, made {n}")
        count = p["latency"]["count"] if "latency" in p else 0
        check(count == n, f"{fn}: {count} calls timed, {n} returned")
        check(p["mode"] == path, f"{fn}: a {p['mode']} probe with --latency on the {path} path")
        # A sanitized build's instrumented C code may leave an exit no room for a jmp.
        exact = path == "trap" or fn in ASM or not SANITIZED
        jumped = p["returns"] if path == "jump" else 0
        check(p["jump_returns"] == jumped if exact else p["jump_returns"] <= jumped,
              f"{fn}: {p['jump_returns']} of {p['returns']} returns by trampolines on the {path} path")
    # Ten sleeps of 5 ms, five of 40 ms; a loaded machine (or valgrind) may add some.
    s = got["ct_sleep"]["latency"]
    check(5e6 <= s["min_ns"] < 16e6 and 40e6 <= s["max_ns"] < 200e6, f"ct_sleep: min {s['min_ns']}, "
          f"max {s['max_ns']} ns for sleeps of 5 and 40 ms")
    check(5e6 <= s["p50_ns"] < 16e6 and 40e6 <= s["p99_ns"] < 200e6,
          f"ct_sleep: p50 {s['p50_ns']}, p99 {s['p99_ns']} for ten 5 ms and five 40 ms sleeps")
    short = sum(b["count"] for b in s["hist"] if 4194304 <= b["lo_ns"] and b["hi_ns"] <= 16777216)
    long_ = sum(b["count"] for b in s["hist"] if b["lo_ns"] >= 33554432)
    check(short == 10 and long_ == 5, f"ct_sleep histogram {s['hist']}")
    check(sum(b["count"] for b in s["hist"]) == s["count"], "histogram and count differ")


def mixed_paths():
    """A function whose entry stays an int3 while its ret is a jmp (ct_mixed), and one
    whose entry is a jmp while its ret stays an int3 (ct_mixed2): the tracer and the
    trampolines keep one stack of calls, every call is timed, none is invented."""
    rc, out, err, rep = trace(["ct_mixed", "ct_mixed2", "ct_leaf"], [T["CALLS_TARGET"], "all"],
                              extra=["--latency", "-v"])
    check(rc == 0, f"status {rc}: {err}")
    compare_counts(rep, expected(err), "entries", ["ct_mixed", "ct_mixed2", "ct_leaf"])
    got, returns = by_name(rep), said(err, RETURNS)
    want = {"ct_mixed": ("trap", 9), "ct_mixed2": ("jump", 0), "ct_leaf": ("jump", 16)}
    for fn, (mode, by_jumps) in want.items():
        p = got[fn]
        timed = p["latency"]["count"] if "latency" in p else 0
        check(p["mode"] == mode and p["jump_returns"] == by_jumps,
              f"{fn}: a {p['mode']} entry, {p['jump_returns']} returns by trampolines "
              f"(want {mode}, {by_jumps}): {p.get('trap_reason')}")
        check(p["returns"] == returns[fn] and timed == returns[fn],
              f"{fn}: {p['returns']} returns, {timed} timed, made {returns[fn]}")
    check("a call among the displaced" in got["ct_mixed"]["trap_reason"] and
          "a branch to" in got["ct_mixed2"]["trap_reason"], "reasons: "
          f"{got['ct_mixed']['trap_reason']!r}, {got['ct_mixed2']['trap_reason']!r}")


def cxx_exceptions():
    """C++ exceptions unwind 5 nested probed calls ten times: no return is invented, and
    the calls made afterwards at the same depth are matched and timed, every one."""
    if not T["EXC_TARGET"]:
        print("SKIP: no C++ compiler")
        sys.exit(77)
    rc, out, err, rep = trace(["cx_throw", "cx_leaf"], [T["EXC_TARGET"]], extra=["--latency"])
    check(rc == 0 and "caught 10" in out, f"status {rc}: {out} {err}")
    compare_counts(rep, expected(err), "entries", ["cx_throw", "cx_leaf"])
    got, returns = by_name(rep), said(err, RETURNS)
    for fn, n in returns.items():
        timed = got[fn]["latency"]["count"] if "latency" in got[fn] else 0
        check(got[fn]["returns"] == n and timed == n,
              f"{fn}: {got[fn]['returns']} returns, {timed} timed, made {n}")


def events_lines():
    """--events: one line per call as it returns, arguments formatted by the signature,
    strings read from the target and escaped; a tail call says so."""
    rc, text, err = run_events(PROBES)
    check(rc == 0, f"status {rc}: {err}")
    lines = [l for l in text.splitlines() if re.match(r"^\d+ calls_target:", l)]
    args = [l for l in lines if ":ct_args(" in l]
    check(len(args) == 1 and ':ct_args("abc\\"\\n", -5, 7, 0xff, \'x\', true) = ' in args[0]
          and args[0].split(" = ")[1].startswith("383 <"), f"ct_args line: {args}")
    sleeps = [l for l in lines if ":ct_sleep(" in l]
    check(len(sleeps) == 15 and all(re.search(r"\(\d+\) = (10|80) <[\d.]+ms>$", l) for l in sleeps),
          f"ct_sleep lines: {sleeps[:3]}")
    tails = [l for l in lines if ":ct_tail(" in l]
    check(len(tails) == 7 and all(l.endswith(">") and "= <tail call>" in l for l in tails),
          f"ct_tail lines: {tails[:2]}")
    check(not [l for l in lines if ":ct_deep(" in l], "an event for a call that never returned")
    fibs = said(err, RETURNS)["ct_fib"]
    check(len([l for l in lines if ":ct_fib(" in l]) == fibs, "not one line per ct_fib return")


def events_json():
    """--events --format json: one JSON object per line per call, then the report."""
    rc, text, err = run_events(["ct_args(str, int, uint, hex, char, bool)", "ct_sleep"], "json")
    check(rc == 0, f"status {rc}: {err}")
    events = [json.loads(l) for l in text.splitlines() if l.startswith('{"tid"')]
    check(len(events) == 16, f"{len(events)} events, 16 calls returned")
    a = next(e for e in events if e["probe"].endswith(":ct_args"))
    check(a["args"][1:] == [-5, 7, 255, 120, 1] and a["ret"] == 383 and
          not a["tail"] and a["duration_ns"] > 0 and a["ts_ns"] > 1e18, f"ct_args event {a}")
    rest = text[text.index("\n{\"target\"") + 1:] if "\n{\"target\"" in text else text
    rep = json.loads(rest)
    check(by_name(rep)["ct_sleep"]["latency"]["count"] == 15, "report after the events")
    check(by_name(rep)["ct_sleep"]["mode"] == "trap", "events from a jump probe")


def threads_latency():
    """Eight threads sleeping in ct_sleep: every call timed, per thread stacks apart."""
    rc, out, err, rep = trace(["ct_sleep"], [T["CALLS_TARGET"], "threads", "8"], extra=["--latency"])
    check(rc == 0, f"status {rc}: {err}")
    p = by_name(rep)["ct_sleep"]
    check(p["hits"] == 160 and p["returns"] == 160 and p["latency"]["count"] == 160,
          f"{p['hits']} entries, {p['returns']} returns, {p['latency']['count']} timed, made 160")
    check(p["mode"] == "jump" and p["jump_returns"] == 160, f"a {p['mode']} probe, "
          f"{p['jump_returns']} of 160 returns timed in the target")
    check(p["latency"]["min_ns"] >= 1e6, f"min {p['latency']['min_ns']} ns for 1 ms sleeps")


def offsets():
    """FUNC+OFF at an instruction boundary counts like an entry, on either path; one
    inside an instruction, or past the end, is refused with exit status 3."""
    for extra in ([], ["--no-optimize"]):
        rc, out, err, rep = trace(["ct_offs+3", "ct_offs+0x8"], [T["CALLS_TARGET"], "all"], extra=extra)
        check(rc == 0, f"status {rc}: {err}")
        got = by_name(rep)
        check(got["ct_offs+0x3"]["hits"] == 7 and got["ct_offs+0x8"]["hits"] == 7,
              f"offset counts {[(k, v['hits']) for k, v in got.items()]}")
    for bad, words in (("ct_offs+1", "not where an instruction"), ("ct_offs+200", "past the end")):
        rc, out, err, rep = trace([bad], [T["CALLS_TARGET"], "all"])
        check(rc == 3 and words in err and "sum" not in out, f"{bad}: status {rc}, {err!r}")


def threads_come_and_go():
    """Waves of threads, each calling counted_fn and taking signals whose handlers call it
    too, while other threads loop on busy_fn: a thread's slot, its call block included,
    goes to a thread born later. Every call returns once and is timed once, no more: a
    block not emptied when its thread went would time calls twice."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
        p = subprocess.Popen([*PTSS_CMD, "trace", "-q", "--latency", "--format", "json", "-o", f.name,
                              "counted_fn", "busy_fn", "--", T["CHURN"], "8"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
        check(p.stdout.readline().strip() == "ready", "churn did not start")
        made = 0
        for _ in range(4 if SANITIZED else 20):
            p.stdin.write("go 8 40\n")
            line = p.stdout.readline().strip()
            check(line.startswith("done "), f"churn answered {line!r}")
            made += int(line.split()[1])
        out, err = p.communicate("quit\n", timeout=120)
        check(p.returncode == 0 and out.startswith("bye "), f"status {p.returncode}: {out!r} {err}")
        got = by_name(json.loads(open(f.name).read()))
    for fn, q in got.items():
        timed = q["latency"]["count"] if "latency" in q else 0
        check(q["returns"] == q["hits"] and timed == q["hits"],
              f"{fn}: {q['hits']} calls, {q['returns']} returns, {timed} timed")
        check(SANITIZED or (q["mode"] == "jump" and q["jump_returns"] > 0),  # -O0 code may trap
              f"{fn}: a {q['mode']} probe, {q['jump_returns']} returns by trampolines")
    check(got["counted_fn"]["hits"] == made, f"counted_fn: {got['counted_fn']['hits']}, made {made}")


PY_WORK = """
import threading
def work(k):
    s = 0
    for i in range(3000):
        s += len(str(i * k) * 3)
ts = [threading.Thread(target=work, args=(k,)) for k in range(4)]
[t.start() for t in ts]
[t.join() for t in ts]
print("done")
"""


def python_malloc():
    """A program no one here wrote: python3 with 4 threads, libc's malloc and free timed.
    On either path every call returns once and is timed once; the jump path (most of
    malloc's and free's exits take a jmp) and the trap path see the same calls."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    got = {}
    for path in ("jump", "trap"):
        extra = ["--latency"] + (["--no-optimize"] if path == "trap" else [])
        with tempfile.NamedTemporaryFile("r", suffix=".json") as f:
            p = subprocess.run([*PTSS_CMD, "trace", "-q", "--format", "json", "-o", f.name, *extra,
                                "libc:malloc", "libc:free", "--", "python3", "-c", PY_WORK],
                               capture_output=True, text=True, timeout=300, env=env)
            check(p.returncode == 0 and p.stdout == "done\n", f"{path}: status {p.returncode}: {p.stderr}")
            got[path] = {q["probe"].split(":")[1]: q for q in json.loads(open(f.name).read())["probes"]}
        for fn, q in got[path].items():
            timed = q["latency"]["count"] if "latency" in q else 0
            check(q["hits"] > 1000 and q["returns"] == q["hits"] and timed == q["hits"],
                  f"{path} {fn}: {q['hits']} calls, {q['returns']} returns, {timed} timed")
    m = got["jump"]["malloc"]
    check(m["mode"] == "jump" and (SANITIZED or m["jump_returns"] > 0.9 * m["returns"]),
          f"malloc on the jump path: {m['mode']}, {m['jump_returns']} of {m['returns']} returns "
          f"by trampolines ({m.get('trap_reason')})")
    check(got["jump"]["malloc"]["hits"] == got["trap"]["malloc"]["hits"],
          f"malloc: {got['jump']['malloc']['hits']} calls on the jump path, "
          f"{got['trap']['malloc']['hits']} on the trap path")


def bad_signatures():
    """A malformed signature is a usage error (2), said on one line."""
    for bad in ("ct_args(str, float)", "ct_args(str", "ct_args(int,int,int,int,int,int,int)",
                "ct_offs+x"):
        rc, out, err, rep = trace([bad], [T["CALLS_TARGET"], "all"])
        lines = [l for l in err.splitlines() if l.startswith("ptss:")]
        check(rc == 2 and len(lines) == 1, f"{bad}: status {rc}, {lines}")


SCENARIOS = {
    "calls-latency-exact": lambda: latency_exact("jump"),
    "calls-latency-exact-trap": lambda: latency_exact("trap"),
    "calls-mixed-paths": mixed_paths,
    "calls-cxx-exceptions": cxx_exceptions,
    "calls-events-lines": events_lines,
    "calls-events-json": events_json,
    "calls-threads-latency": threads_latency,
    "calls-offsets": offsets,
    "calls-python-malloc": python_malloc,
    "calls-threads-come-and-go": threads_come_and_go,
    "calls-bad-signatures": bad_signatures,
}

if __name__ == "__main__":
    main(SCENARIOS)
