#!/usr/bin/env python3
"""The tracer half of the benchmark suite (bench/run runs it after the allocator half).

1. Per-hit cost: bench_hit_target N (a loop calling the noinline bench_hit N times) run
   untraced and under `ptss trace` (its default, the jump path: optimized probes),
   `ptss trace --no-optimize` (the int3 path: a ptrace stop per hit), `ptss trace --latency`
   (every call timed on the jump path: the entry's trampoline pushes a call frame, the
   exits' trampolines time it in the target; the jump row's target and N), `ptss trace
   --latency --no-optimize` (timed on the trap path: a stop at the entry and one at the
   return; the trap row's target and N), `uftrace record -P` (in-process dynamic
   patching), `ltrace -x`, kernel uprobes
   through bpftrace and gdb (a breakpoint whose commands count and continue), side by side
   in each round, in an order rotated round by round. Each tool is run twice per round: as
   a user would run it (the scheduler places tracer and target) and with both pinned to
   one CPU. Every tool runs the copy of the target built with -fpatchable-function-entry=5
   (what uftrace -P needs without capstone) where it works on it. Hit counts are checked
   against N (and --latency's calls timed, its JSON latency.count; on the jump path also
   the probe's mode, jump, and its returns timed by exit trampolines, jump_returns). In the same
   rounds, ptss's default path traces the target's loop split over 1 and over 2 threads
   (bench_hit_target N T), free placement only: the cost each thread pays per call.
2. The cost of one injected system call, and 3. enable and fork clean-up against the
   page count: bench_inject (bench/inject.c) prints JSON lines, summarised here.

Writes tracer.json, tracer.md, tracer_per_hit.png and fork_cleanup.png (gnuplot) under the results folder,
keeps the raw records in tracer.raw.tmp, and prints tracer.md. A measurement: goals are
reported PASS or MISS and never fail the run; a tracer that cannot run here is reported
as not available, with the reason.

usage: tracer.py [--quick] [--build DIR] [--results DIR]
"""
import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# N: the calls per run (per thread in the threaded runs). The jump path costs a few ns a
# hit: it needs more of them to stand out of the untraced loop's noise.
FULL = {"rounds": 7, "n": {"ptss": 1000000, "ptss_trap": 100000, "uftrace": 100000,
                           "uprobes": 100000, "uprobes_plain": 100000, "ltrace": 10000,
                           "gdb": 1000},
        "inject_k": 200, "inject_rounds": 15, "fork_reps": 10}
QUICK = {"rounds": 3, "n": {"ptss": 200000, "ptss_trap": 20000, "uftrace": 20000,
                            "uprobes": 20000, "uprobes_plain": 20000, "ltrace": 2000,
                            "gdb": 300},
         "inject_k": 100, "inject_rounds": 5, "fork_reps": 3}
for _cfg in (FULL, QUICK):  # each --latency row: the N of the entry probe it compares to
    _cfg["n"]["ptss_latency"] = _cfg["n"]["ptss"]
    _cfg["n"]["ptss_latency_trap"] = _cfg["n"]["ptss_trap"]
FORK_PAGES = [1, 10, 100, 1000, 4096]
# "ptss": `ptss trace` as it runs by default (the jump path); "ptss_trap": the int3 path;
# "ptss_latency": `ptss trace --latency`, every call timed on the jump path (trampolines at
# the entry and at the returns, no stop); "ptss_latency_trap": `--latency --no-optimize`,
# timed on the trap path (int3 at the entry and at the returns: two stops per call).
# "uprobes_plain": uprobes on the plain target, whatever the others run: on the patchable
# copy the probed instruction is a nop, which the kernel emulates instead of single-stepping.
PTSS = ["ptss", "ptss_trap", "ptss_latency", "ptss_latency_trap"]
# Each --latency row runs on the target of, and is judged against, its path's entry probe.
LATENCY_OF = {"ptss_latency": "ptss", "ptss_latency_trap": "ptss_trap"}
TOOLS = PTSS + ["uftrace", "uprobes", "uprobes_plain", "ltrace", "gdb"]
LABEL = {"untraced": "untraced (the loop itself)", "ptss": "ptss trace (jump)",
         "ptss_trap": "ptss trace --no-optimize (trap)", "ptss_latency": "ptss trace --latency",
         "ptss_latency_trap": "ptss trace --latency --no-optimize",
         "uftrace": "uftrace record -P", "uprobes": "uprobes (bpftrace)",
         "uprobes_plain": "uprobes (bpftrace), plain target", "ltrace": "ltrace -x",
         "gdb": "gdb breakpoint"}
UPROBES = ("uprobes", "uprobes_plain")
SHORT = {"untraced": "untraced", "ptss": "ptss jump", "ptss_trap": "ptss trap",
         "ptss_latency": "ptss --latency", "ptss_latency_trap": "ptss --latency trap",
         "uftrace": "uftrace -P", "uprobes": "uprobes",
         "uprobes_plain": "uprobes, plain target", "ltrace": "ltrace -x", "gdb": "gdb"}  # the plot's
# Where ptss has no --no-optimize, its default is the trap path: run as "ptss_trap".
TRAP_ONLY_LABEL = "ptss trace (trap: this build has no --no-optimize)"
NO_JUMP_WHY = "this build has no --no-optimize"
NO_LATENCY_WHY = "this build has no --latency"
PLACEMENTS = ["free", "pinned"]
THREADS = [1, 2]  # the threaded runs of ptss's default path
LOOP_RE = re.compile(r"(\d+) calls, sum \d+, loop_ns (\d+)")
GDB_SCRIPT = """set pagination off
set confirm off
set $hits = 0
break bench_hit
commands
silent
set $hits = $hits + 1
continue
end
run
printf "gdb-hits %d\\n", $hits
"""


def summary(values):
    v = sorted(values)
    if not v:
        return None
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "n": len(v)}


def machine():
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass

    def first_line(argv):
        try:
            out = subprocess.run(argv, capture_output=True, text=True, check=False)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return None

    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "compiler": first_line(["cc", "--version"]),
        "ltrace": first_line(["ltrace", "-V"]) if shutil.which("ltrace") else None,
        "bpftrace": first_line(["bpftrace", "--version"]) if shutil.which("bpftrace") else None,
        "gdb": first_line(["gdb", "--version"]) if shutil.which("gdb") else None,
        "uftrace": first_line(["uftrace", "--version"]) if shutil.which("uftrace") else None,
        "loadavg_at_report": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def run(argv, timeout=300):
    """(wall seconds, stdout + stderr, return code) of one command."""
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, check=False)
        out, rc = p.stdout, p.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
        out, rc = out + "\n(timed out)", 124
    return time.perf_counter() - t0, out, rc


def timing_failure(tool, n, info):
    """Why a --latency run (tool) of n calls did not time them as it should, or None (and
    None for the other tools): latency.count = n; on the jump path (ptss_latency) also the
    probe's mode jump and jump_returns = n (every return timed by an exit trampoline)."""
    if tool not in LATENCY_OF:
        return None
    if info.get("timed") != n:
        return f"latency.count {info.get('timed')}"
    if tool == "ptss_latency":
        if info.get("modes") != ["jump"]:
            return (f"probe mode {', '.join(info.get('modes') or ['none'])}, not jump"
                    + (f" ({'; '.join(info['trap_reasons'])})" if info.get("trap_reasons") else ""))
        if info.get("jump_returns") != n:
            return f"jump_returns {info.get('jump_returns')}"
    return None


class Tools:
    """The command line of each tracer, the target it runs, and how to read its hit count."""

    def __init__(self, build, tmp):
        self.ptss = os.path.join(build, "tools", "ptss")
        # The targets in order of preference: the patchable copy first, so that every tool
        # runs the same binary where it can.
        self.plain = os.path.join(build, "bench", "bench_hit_target")
        self.patchable = os.path.join(build, "bench", "bench_hit_target_patchable")
        self.targets = [t for t in (self.patchable, self.plain) if os.access(t, os.X_OK)]
        if not self.targets:
            raise SystemExit(f"tracer.py: no bench_hit_target in {build}/bench")
        self.tmp = tmp
        self.gdb_script = os.path.join(tmp, "count.gdb")
        with open(self.gdb_script, "w") as f:
            f.write(GDB_SCRIPT)
        self.ptss_out = os.path.join(tmp, "ptss.json")
        self.uftrace_dir = os.path.join(tmp, "uftrace.data")
        options = self.trace_options()
        self.no_optimize = "--no-optimize" in options
        self.latency = "--latency" in options
        self.label = dict(LABEL)
        if not self.no_optimize:
            self.label["ptss_trap"] = TRAP_ONLY_LABEL
        self.available = {}
        self.why = {}
        self.binary = {}  # tool: the target it runs
        self.binary_why = {}  # tool: why it runs a target other than the first choice

    def trace_options(self):
        """`ptss trace --help`: the options this build has ("" if it is not built)."""
        if not os.access(self.ptss, os.X_OK):
            return ""
        return run([self.ptss, "trace", "--help"], timeout=30)[1]

    @property
    def thread_tool(self):
        """The ptss path of the threaded runs: the default one (jump, or trap if that is all)."""
        return next((t for t in ("ptss", "ptss_trap") if self.available.get(t)), None)

    def argv(self, tool, n, threads=0, target=None):
        """One run: the target (by default the one tool runs) alone ("untraced") or under
        tool; threads: 0 for the loop in main, else the worker threads sharing the N calls."""
        hit = [target or self.binary[tool], str(n)] + ([str(threads)] if threads else [])
        if tool == "untraced":
            return hit
        if tool in PTSS:
            # The report goes to a file (read for the count); -q: no messages.
            if os.path.exists(self.ptss_out):
                os.unlink(self.ptss_out)
            path = {"ptss_trap": ["--no-optimize"] if self.no_optimize else [],
                    "ptss_latency": ["--latency"],
                    "ptss_latency_trap": ["--latency", "--no-optimize"]}.get(tool, [])
            return ([self.ptss, "trace", "-q"] + path
                    + ["--format", "json", "-o", self.ptss_out, "bench_hit", "--"] + hit)
        if tool == "uftrace":
            # --no-libcall: bench_hit only, as the other tools (no PLT hooks on libc).
            self.remove_uftrace_data()
            return ["uftrace", "record", "--no-libcall", "-d", self.uftrace_dir,
                    "-P", "bench_hit"] + hit
        if tool == "ltrace":
            return ["ltrace", "-x", "bench_hit", "-o", "/dev/null"] + hit
        if tool in UPROBES:
            return ["bpftrace", "-e", f"uprobe:{hit[0]}:bench_hit {{ @n = count(); }}",
                    "-c", " ".join(hit)]
        if tool == "gdb":
            return ["gdb", "-batch", "-nx", "-q", "-x", self.gdb_script, "--args"] + hit
        raise ValueError(tool)

    def result(self, tool, out):
        """(the hits the tracer saw in the run whose output is out, None if unknown; what
        else ptss's JSON report says of them, {} for the other tools: see ptss_report)."""
        if tool in PTSS:
            return self.ptss_report(timed=tool in LATENCY_OF)
        if tool == "uftrace":
            return self.uftrace_count(), {}
        if tool == "ltrace":  # -o /dev/null: ltrace_count runs ltrace -c for its count
            return None, {}
        m = re.search(r"^@n: (\d+)" if tool in UPROBES else r"gdb-hits (\d+)", out, re.M)
        return (int(m.group(1)) if m else None), {}

    def ptss_report(self, timed=False):
        """(bench_hit's hits, None if the report cannot be read; {"modes": the probe modes,
        None if the report gives none}, and with timed (--latency) "timed": the calls timed
        entry to return (latency.count, None if absent), "jump_returns": the returns timed
        by exit trampolines (None if absent), "latency_ns": ptss's own p50 and p99 of them,
        and "trap_reasons" where the report says why a probe is a trap probe)."""
        try:
            with open(self.ptss_out) as f:
                probes = [p for p in json.load(f)["probes"] if p["probe"].endswith(":bench_hit")]
            hits = sum(p["hits"] for p in probes)
        except (OSError, ValueError, KeyError, TypeError):
            return None, {}
        info = {"modes": sorted({p["mode"] for p in probes if "mode" in p}) or None}
        if timed:  # bench_hit is one function: one probe
            lat = (probes[0].get("latency") or {}) if len(probes) == 1 else {}
            info["timed"] = lat.get("count")
            info["jump_returns"] = probes[0].get("jump_returns") if len(probes) == 1 else None
            info["latency_ns"] = {q: lat.get(f"{q}_ns") for q in ("p50", "p99")}
            reasons = sorted({p["trap_reason"] for p in probes if p.get("trap_reason")})
            if reasons:
                info["trap_reasons"] = reasons
        return hits, info

    def uftrace_count(self):
        """bench_hit's calls in `uftrace report` of the last run; its data is removed."""
        _, out, _ = run(["uftrace", "report", "-d", self.uftrace_dir], timeout=120)
        self.remove_uftrace_data()
        for line in out.splitlines():
            cols = line.split()
            if len(cols) > 2 and cols[-1] == "bench_hit" and cols[-2].isdigit():
                return int(cols[-2])
        return None

    def remove_uftrace_data(self):
        for d in (self.uftrace_dir, self.uftrace_dir + ".old"):  # uftrace keeps a DIR.old
            shutil.rmtree(d, ignore_errors=True)

    def ltrace_count(self, n, target=None):
        """ltrace's own count of bench_hit calls (ltrace -c), from one more run."""
        path = os.path.join(self.tmp, "ltrace-c.txt")
        run(["ltrace", "-c", "-x", "bench_hit", "-o", path, target or self.binary["ltrace"], str(n)])
        try:
            with open(path) as f:
                for line in f:
                    cols = line.split()
                    if len(cols) == 5 and cols[4] == "bench_hit":
                        return int(cols[3])
        except OSError:
            pass
        return None

    def missing(self, tool):
        """Why tool cannot run at all here, or None."""
        if tool in PTSS:
            if not os.access(self.ptss, os.X_OK):
                return f"{self.ptss} is not built"
            if tool in LATENCY_OF and not self.latency:
                return NO_LATENCY_WHY
            return (NO_JUMP_WHY if tool in ("ptss", "ptss_latency_trap") and not self.no_optimize
                    else None)
        exe = "bpftrace" if tool in UPROBES else tool
        if not shutil.which(exe):
            return f"{exe} is not installed (scripts/deps installs it)"
        if tool == "uprobes_plain" and self.targets != [self.patchable, self.plain]:
            return "only one target is built: the uprobes row is all there is"
        return None

    def failure(self, tool, target):
        """Why tool does not count 10 hits right on target (with --latency: or does not time
        them as it should, timing_failure), or None when it does."""
        n = 10
        _, out, rc = run(self.argv(tool, n, target=target), timeout=120)
        got, info = (self.ltrace_count(n, target), {}) if tool == "ltrace" else self.result(tool, out)
        timing = timing_failure(tool, n, info)
        if rc == 0 and LOOP_RE.search(out) is not None and got == n and timing is None:
            return None
        if rc == 0 and got == n and timing:
            return f"{timing} for {n} calls"
        errors = [l.strip() for l in out.splitlines()
                  if re.search(r"error|denied|not permitted|cannot|failed", l, re.I)]
        return (f"exit status {rc}, {'no' if got is None else got} hits counted for {n}: "
                + ("; ".join(errors[:2]) or out.strip()[-200:]))

    def probe(self):
        """Which tracers run here and on which target; the reason for each that does not."""
        for tool in TOOLS:
            why = self.missing(tool)
            failures = []
            targets = [self.plain] if tool == "uprobes_plain" else self.targets
            if LATENCY_OF.get(tool) in self.binary:  # its goal compares the two on one path
                targets = [self.binary[LATENCY_OF[tool]]]
            for target in [] if why else targets:
                fail = self.failure(tool, target)
                if fail is None:
                    self.binary[tool] = target
                    break
                failures.append(f"on {os.path.basename(target)}: {fail}")
            self.available[tool] = tool in self.binary
            if failures:
                (self.binary_why if self.available[tool] else self.why)[tool] = "; ".join(failures)
            elif why:
                self.why[tool] = why


def hits_bench(tools, cfg, raw):
    """Every round, each configuration in turn (the order rotated round by round): an
    untraced run, then the traced one, free and pinned."""
    cpu = min(os.sched_getaffinity(0))
    pin = ["taskset", "-c", str(cpu)] if shutil.which("taskset") else None
    placements = PLACEMENTS if pin else ["free"]
    # (tool, threads, placements); threads 0: the loop in main. The threaded runs are free
    # only: pinned to one CPU, two threads would take turns.
    configs = [(t, 0, placements) for t in TOOLS if tools.available[t]]
    if tools.thread_tool:
        configs += [(tools.thread_tool, k, ["free"]) for k in THREADS]
    for r in range(cfg["rounds"]):
        for i in range(len(configs)):
            tool, threads, where = configs[(i + r) % len(configs)]
            per_thread = cfg["n"][tool]
            n = per_thread * max(threads, 1)
            for placement in where:
                prefix = pin if placement == "pinned" else []
                # The untraced run just before, in the same placement: ratios to it come
                # from runs seconds apart.
                for which in ("untraced", tool):
                    wall, out, rc = run(prefix + tools.argv(which, n, threads, tools.binary[tool]))
                    m = LOOP_RE.search(out)
                    if which == "untraced" and m is None:
                        raise SystemExit(f"tracer.py: the target failed: {out[-300:]}")
                    count, info = (n, {}) if which == "untraced" else tools.result(which, out)
                    raw.append({"type": "hits", "round": r, "tool": which, "for": tool,
                                "threads": threads, "placement": placement, "n": n,
                                "per_thread": per_thread, "rc": rc, "wall_ns": wall * 1e9,
                                "loop_ns": int(m.group(2)) if m else None,
                                "count": count, **info})
        print(f"bench/run: tracer round {r + 1}/{cfg['rounds']} done", file=sys.stderr)
    if tools.available.get("ltrace"):
        n = cfg["n"]["ltrace"]
        raw.append({"type": "ltrace_count", "n": n, "count": tools.ltrace_count(n)})


def inject_bench(build, cfg, raw):
    exe = os.path.join(build, "bench", "bench_inject")
    cpu = min(os.sched_getaffinity(0))
    for placement in PLACEMENTS:
        argv = [exe, "syscall", "-k", str(cfg["inject_k"]), "-r", str(cfg["inject_rounds"])]
        if placement == "pinned":
            if not shutil.which("taskset"):
                continue
            argv = ["taskset", "-c", str(cpu)] + argv
        _, out, rc = run(argv)
        if rc:
            raise SystemExit(f"tracer.py: bench_inject syscall failed:\n{out}")
        for line in out.splitlines():
            if line.startswith("{"):
                rec = json.loads(line)
                rec["placement"] = placement
                raw.append(rec)
    _, out, rc = run([exe, "fork", "-p", ",".join(map(str, FORK_PAGES)),
                      "-r", str(cfg["fork_reps"])], timeout=600)
    if rc:
        raise SystemExit(f"tracer.py: bench_inject fork failed:\n{out}")
    raw.extend(json.loads(l) for l in out.splitlines() if l.startswith("{"))


def per_hit_figures(raw):
    """Per hit, by (tool, threads, placement). Each traced run is paired with the untraced
    run just before it; a figure is what each thread paid per call: the loop's (or the
    command's) added wall time over the calls one thread made. A run counted right when
    its hits, and with --latency its calls timed, are N (and for --latency on the jump
    path, its mode is jump and its jump_returns N: timing_failure). Also the untraced
    single loop's
    own ns per call, by placement."""
    hits, prev, untraced = {}, {}, {}
    for rec in raw:
        if rec["type"] != "hits":
            continue
        key = (rec["for"], rec["threads"], rec["placement"])
        if rec["tool"] == "untraced":
            prev[key] = rec
            if not rec["threads"]:
                untraced.setdefault(rec["placement"], []).append(rec["loop_ns"] / rec["n"])
            continue
        base = prev.get(key)
        h = hits.setdefault(key, {"n": rec["n"], "per_thread": rec["per_thread"], "loop": {},
                                  "wall": {}, "startup": {}, "failed": 0, "counted": set(),
                                  "modes": set(), "latency_ns": {}})
        if not base or rec["loop_ns"] is None or rec["rc"] != 0:
            h["failed"] += 1
            continue
        calls, r = rec["per_thread"], rec["round"]
        h["loop"][r] = (rec["loop_ns"] - base["loop_ns"]) / calls
        h["wall"][r] = (rec["wall_ns"] - base["wall_ns"]) / calls
        # What the whole command added besides the hits: start-up and tear-down.
        h["startup"][r] = (rec["wall_ns"] - base["wall_ns"]) - (rec["loop_ns"] - base["loop_ns"])
        h["counted"].add(rec["count"] == rec["n"]
                         and timing_failure(rec["tool"], rec["n"], rec) is None)
        h["modes"].update(rec.get("modes") or [])
        for q, ns in (rec.get("latency_ns") or {}).items():  # ptss --latency's own figures
            if ns is not None:
                h["latency_ns"].setdefault(q, []).append(ns)
    ltc = next((r for r in raw if r["type"] == "ltrace_count"), None)
    for key, h in hits.items():
        if ltc and key[0] == "ltrace":  # ltrace -o /dev/null counts nothing: its -c run does
            h["counted"] = {ltc["count"] == ltc["n"]}
    return hits, untraced, ltc


def round_ratio(num, den, measure):
    """num / den round by round, summarised (None: no round has both)."""
    return summary([num[measure][k] / den[measure][k] for k in num[measure]
                    if k in den[measure] and den[measure][k] > 0])


def per_hit_goals(a, raw, tools):
    """The goals on hits (issues 5 and 12); one not measured here says why."""
    goals = []
    label = tools.label

    def goal(name, measure, value, target, ok, why=None):
        g = {"goal": name, "measure": measure, "value": value, "target": target, "pass": ok}
        if why:
            g["why"] = why
        goals.append(g)

    def why_not(*ts):
        return ("; ".join(f"{label[t]}: {tools.why[t]}" for t in ts if not tools.available.get(t))
                or "no successful run")

    def ratio_goal(name, num, den, limit, why=None):
        """num / den per hit (loop), one row per placement measured; limit None: shown for
        reference, not judged (why says so)."""
        measure = f"{label[num]} / {label[den]} ns per hit (loop)"
        target = "none" if limit is None else f"<= {limit:g}"
        rows = [(r["placement"], r["ratio"]) for r in a["ratios"]
                if (r["num"], r["den"], r["measure"]) == (num, den, "loop")]
        for placement, r in rows:
            goal(name, f"{measure}, {placement}", r, target,
                 None if limit is None else r["median"] <= limit, why)
        if not rows:
            goal(name, measure, None, target, None, why_not(num, den))

    ratio_goal("per hit at most 1/5 of ltrace (the trap path)", "ptss_trap", "ltrace", 0.2)
    ratio_goal("added cost per call at most 1/10 of uftrace -P's", "ptss", "uftrace", 0.1)
    ratio_goal("added cost per call at most 1/100 of a kernel uprobe's", "ptss", "uprobes", 0.01)
    ratio_goal("the same, the uprobe on the plain target (single-stepped)", "ptss",
               "uprobes_plain", 0.01)

    runs = [r for r in raw if r["type"] == "hits" and r["tool"] == "ptss"]
    exact = sum(r["count"] == r["n"] for r in runs)
    goal("exact count", f"{label['ptss']}: runs whose hits counted = N",
         f"{exact} of {len(runs)} runs" if runs else None, "every run",
         exact == len(runs) if runs else None, None if runs else why_not("ptss"))

    th = a["threads"]
    name, target = "two threads pay per call within 1.3x of one", "<= 1.3"
    measure = f"{label[th['tool'] or 'ptss']}: 2 threads / 1 thread ns per hit (loop), free"
    if th["loop"] and th["tool"] == "ptss":
        goal(name, measure, th["loop"], target, th["loop"]["median"] <= 1.3)
    elif th["loop"]:  # the trap path, as the jump path is not here: shown, not judged
        goal(name, measure, th["loop"], target, None, "the trap path, not judged: " + why_not("ptss"))
    else:
        goal(name, measure, None, target, None, why_not("ptss"))

    # Issue 13. Per hit (loop) is already the cost added to the untraced loop.
    # "adds at most 2x the cost of a plain entry probe": latency - entry <= 2 x entry.
    ratio_goal("latency adds at most 2x a plain entry probe on the same path "
               "(latency / entry <= 3)", "ptss_latency", "ptss", 3)
    ratio_goal("the same on the trap path (--latency --no-optimize / --no-optimize <= 3)",
               "ptss_latency_trap", "ptss_trap", 3)
    for tool in LATENCY_OF:
        ratio_goal("latency against uftrace -P (entry and exit timestamps too)", tool,
                   "uftrace", None, "for reference, not judged: issue 13 sets no target")
    return goals


def analyse(raw, tools, cfg, mode):
    a = {"mode": mode, "machine": machine(), "config": cfg, "labels": tools.label,
         "available": tools.available, "not_available_why": tools.why,
         "binary": {t: os.path.basename(b) for t, b in tools.binary.items()},
         "binary_why": tools.binary_why}

    hits, untraced, ltc = per_hit_figures(raw)
    counted = {}
    for (tool, _, _), h in hits.items():
        counted.setdefault(tool, set()).update(h["counted"])
    a["counts"] = {t: (all(v) if v else None) for t, v in counted.items()}
    a["ltrace_c_count"] = ltc
    a["untraced"] = [{"placement": p, "loop_ns_per_call": summary(v)}
                     for p, v in sorted(untraced.items(), key=lambda kv: PLACEMENTS.index(kv[0]))]

    per_hit = []
    for (tool, threads, placement), h in sorted(
            hits.items(), key=lambda kv: (TOOLS.index(kv[0][0]), kv[0][1], PLACEMENTS.index(kv[0][2]))):
        if not h["loop"]:
            continue
        per_hit.append({"tool": tool, "threads": threads, "placement": placement, "n": h["n"],
                        "calls_per_thread": h["per_thread"],
                        "loop_ns_per_hit": summary(h["loop"].values()),
                        "wall_ns_per_hit": summary(h["wall"].values()),
                        "startup_ms": summary([v / 1e6 for v in h["startup"].values()]),
                        "failed_runs": h["failed"],
                        "count_ok": all(h["counted"]) if h["counted"] else None,
                        "ptss_modes": sorted(h["modes"]) or None,
                        "ptss_latency_ns": {q: summary(v) for q, v in h["latency_ns"].items()}
                        or None})
    a["per_hit"] = per_hit

    # In the target's single loop: ptss's jump and trap paths against every other tool (the
    # jump path against the trap path too); each --latency row against its path's entry
    # probe (jump: the entry's trampoline plus the exits'; trap: the same stops plus the
    # returns') and against uftrace -P (which records entry and exit too).
    others = [t for t in TOOLS if t not in PTSS]
    ratios = []
    for num, dens in (("ptss", ["ptss_trap"] + others), ("ptss_trap", others),
                      ("ptss_latency", ["ptss", "uftrace"]),
                      ("ptss_latency_trap", ["ptss_trap", "uftrace"])):
        for placement in PLACEMENTS:
            p = hits.get((num, 0, placement))
            for den in dens:
                o = hits.get((den, 0, placement))
                for measure in ("loop", "wall") if p and o else ():
                    r = round_ratio(p, o, measure)
                    if r:
                        ratios.append({"num": num, "den": den, "placement": placement,
                                       "measure": measure, "ratio": r})
    a["ratios"] = ratios

    # Two threads against one: the cost each thread pays per call.
    tt = tools.thread_tool
    one, two = (hits.get((tt, k, "free")) for k in THREADS)
    a["threads"] = {"tool": tt, "placement": "free",
                    **{m: round_ratio(two, one, m) if one and two else None
                       for m in ("loop", "wall")}}

    # Injected system calls.
    inj = {}
    for rec in raw:
        if rec["type"] == "inject":
            inj.setdefault((rec["what"], rec["placement"]), []).append(rec["ns_per_op"])
    a["inject"] = [{"what": w, "placement": p, "ns_per_op": summary(v)}
                   for (w, p), v in sorted(inj.items(), key=lambda kv: (kv[0][1], kv[0][0]))]

    # Enable and fork clean-up.
    a["enable"] = [r for r in raw if r["type"] == "enable"]
    fork = {}
    for rec in raw:
        if rec["type"] == "fork":
            fork.setdefault((rec["how"], rec["pages"]), []).append(rec)
    a["fork"] = [{"how": how, "pages": pages,
                  "ns": summary([r["ns"] for r in rs]),
                  "injections": sorted({r["injections"] for r in rs}),
                  "child_had_pages": all(r["child_had_pages"] for r in rs),
                  "child_clean": all(r["child_clean"] for r in rs)}
                 for (how, pages), rs in sorted(fork.items(), key=lambda kv: (kv[0][0] != "ptss_fork", kv[0][1]))]

    # Goals.
    goals = per_hit_goals(a, raw, tools)
    en = a["enable"]
    if en:
        goals.append({"goal": "enable maps every page in one commit",
                      "measure": "injections of ptss_enable, per page count",
                      "value": {str(e["pages"]): e["injections"] for e in en},
                      "target": "the same for every count (3 reserve + 1 commit)",
                      "pass": len({e["injections"] for e in en}) == 1
                      and all(e["maps_rx_pages"] == e["pages"] for e in en)})
    pf = [f for f in a["fork"] if f["how"] == "ptss_fork"]
    if pf:
        goals.append({"goal": "fork clean-up flat whatever the pages",
                      "measure": "injections of ptss_fork, per page count",
                      "value": {str(f["pages"]): f["injections"] for f in pf},
                      "target": "1, child left with no memfd:ptss",
                      "pass": all(f["injections"] == [1] and f["child_clean"] and f["child_had_pages"]
                                  for f in pf)})
    a["goals"] = goals
    return a


def fmt(x, digits=2):
    if x is None:
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def span(s, digits=2, scale=1.0):
    if not s:
        return "–"
    return (f"{fmt(s['median'] * scale, digits)} [{fmt(s['min'] * scale, digits)}–"
            f"{fmt(s['max'] * scale, digits)}]")


def goal_value(g):
    v = g["value"]
    if v is None:
        return f"not measured: {g.get('why', '?')}"
    if isinstance(v, str):
        return v
    if "median" in v:
        return span(v, 3) + (f" ({g['why']})" if "why" in g else "")
    vals = {json.dumps(x) for x in v.values()}
    return (f"{vals.pop().strip('[]')} for every P ({', '.join(v)} pages)" if len(vals) == 1
            else ", ".join(f"P={k}: {x}" for k, x in v.items()))


def yes_no(ok):
    return "yes" if ok else "NO" if ok is False else "?"


def markdown_hits(a):
    """The per-hit section: the table, the targets and modes, the ratios, two threads."""
    label = a["labels"]
    L = ["## Per-hit cost", "",
         "`bench_hit_target N` calls `bench_hit` N times. *loop*: the wall time of the loop, "
         "measured inside the target, minus the untraced loop, over N. *command*: the wall "
         "time of the whole command minus the untraced command, over N (the brief's formula: "
         "it includes each tracer's start-up and tear-down, shown in the last column). The "
         "untraced row is the loop's own ns per call, nothing subtracted.", "",
         "| tracer | placement | N | ns per hit (loop) | ns per hit (command) | start-up + tear-down ms | hits counted = N |",
         "|---|---|---|---|---|---|---|"]
    for u in a["untraced"]:
        L.append(f"| {label['untraced']} | {u['placement']} | all | {span(u['loop_ns_per_call'])} | – | – | – |")
    for h in a["per_hit"]:
        if not h["threads"]:
            L.append(f"| {label[h['tool']]} | {h['placement']} | {h['n']} | {span(h['loop_ns_per_hit'])} | "
                     f"{span(h['wall_ns_per_hit'])} | {span(h['startup_ms'])} | {yes_no(h['count_ok'])} |")
    for t in TOOLS:
        if not a["available"].get(t, False):
            L.append(f"| {label[t]} | – | – | not available here: {a['not_available_why'].get(t, '?')} | | | |")
    L.append("")
    by_binary = {}
    for t, b in a["binary"].items():
        by_binary.setdefault(b, []).append(label[t])
    L.append("- Targets: " + "; ".join(f"`{b}` for {', '.join(ts)}" for b, ts in by_binary.items())
             + " (`_patchable`: built with `-fpatchable-function-entry=5`).")
    L += [f"- {label[t]} does not run the first choice: {why}." for t, why in a["binary_why"].items()]
    modes = {label[h["tool"]]: ", ".join(h["ptss_modes"]) for h in a["per_hit"] if h["ptss_modes"]}
    L.append("- Probe modes in ptss's JSON report: "
             + ("; ".join(f"{k}: {v}" for k, v in modes.items()) if modes
                else "none (this build's report has no `mode`)") + ".")
    for h in a["per_hit"]:
        if h["ptss_latency_ns"]:
            L.append(f"- {label[h['tool']]}, {h['placement']}: its own figures for bench_hit, "
                     "entry to return, over the runs: "
                     + ", ".join(f"{q} {span(v, 0)} ns" for q, v in h["ptss_latency_ns"].items())
                     + " (each run's `latency.count` is checked = N with its hits"
                     + ("; its probe mode = jump and `jump_returns` = N)."
                        if h["tool"] == "ptss_latency" else ")."))
    if a["ltrace_c_count"]:
        c = a["ltrace_c_count"]
        L.append(f"- ltrace's own count (`ltrace -c -x bench_hit`, N = {c['n']}): {c['count']} calls.")

    L += ["", "**Ratios** (round by round, then summarised):", "",
          "| ratio | placement | loop | command |", "|---|---|---|---|"]
    by = {}
    for r in a["ratios"]:
        by.setdefault((r["num"], r["den"], r["placement"]), {})[r["measure"]] = r["ratio"]
    for (num, den, placement), v in by.items():
        L.append(f"| {label[num]} / {label[den]} | {placement} | {span(v.get('loop'), 3)} | "
                 f"{span(v.get('wall'), 3)} |")
    L.append("")

    th = a["threads"]
    if th["tool"]:
        L += [f"### Threads: {label[th['tool']]}", "",
              "`bench_hit_target N T`: T worker threads released together make N/T calls each; "
              "*loop* is the wall time from their release to the end of the last one. ns per "
              "hit = (traced loop − untraced loop) / (N/T): the cost each thread pays per call. "
              "Free placement only (pinned to one CPU, two threads would take turns).", "",
              "| threads | N per thread | ns per hit (loop) | ns per hit (command) | hits counted = N |",
              "|---|---|---|---|---|"]
        for h in a["per_hit"]:
            if h["threads"]:
                L.append(f"| {h['threads']} | {h['calls_per_thread']} | {span(h['loop_ns_per_hit'])} | "
                         f"{span(h['wall_ns_per_hit'])} | {yes_no(h['count_ok'])} |")
        L += ["", f"Two threads / one (round by round): loop {span(th['loop'], 3)}, "
                  f"command {span(th['wall'], 3)}.", ""]
    return L


def markdown(a):
    m = a["machine"]
    L = [f"# Tracer benchmarks ({a['mode']})", "",
         f"{m['date']}: {m['cpu_model']}, nproc {m['nproc']} ({m['cpus_usable']} usable), "
         f"kernel {m['kernel']}, {m['compiler']}; load average at the end "
         f"{', '.join(map(str, m['loadavg_at_report']))}. Tools: "
         + ", ".join(m[t] or f"no {t}" for t in ("uftrace", "ltrace", "bpftrace", "gdb")) + ".", "",
         "Figures are medians over rounds [min–max]. *free*: tracer and target placed by the "
         "scheduler, as a user runs them; *pinned*: both on one CPU (`taskset`).", ""]

    L += ["## Goals", "", "| goal | measure | measured | target | |", "|---|---|---|---|---|"]
    for g in a["goals"]:
        L.append(f"| {g['goal']} | {g['measure']} | {goal_value(g)} | {g['target']} | "
                 f"{'–' if g['pass'] is None else 'PASS' if g['pass'] else 'MISS'} |")
    L.append("")
    L += markdown_hits(a)

    L += ["## One injected system call", "",
          "`ptss_ptrace_syscall(getpid)` into a stopped target thread, ns per call:", "",
          "| what | free | pinned |", "|---|---|---|"]
    names = {"inject_at_breakpoint": "injected getpid, target in a breakpoint's SIGTRAP stop",
             "inject_in_read": "injected getpid, target interrupted in a blocking read (restarted after)",
             "getregs_setregs": "baseline: PTRACE_GETREGS + PTRACE_SETREGS round trip",
             "direct_getpid": "baseline: getpid called directly by the tracer"}
    inj = {(i["what"], i["placement"]): i["ns_per_op"] for i in a["inject"]}
    for w in names:
        L.append(f"| {names[w]} | {span(inj.get((w, 'free')), 1)} | {span(inj.get((w, 'pinned')), 1)} |")
    L.append("")

    L += ["## Enable: pages per injection", "",
          "`ptss_enable(p, P * 64, out)` on a fresh ptrace space (reserve + commit):", "",
          "| pages P | entries | injections | pages per commit injection | ms | pages r-x in the target's maps |",
          "|---|---|---|---|---|---|"]
    for e in a["enable"]:
        L.append(f"| {e['pages']} | {e['entries']} | {e['injections']} | {e['pages']} | "
                 f"{fmt(e['ns'] / 1e6)} | {e['maps_rx_pages']} |")
    L.append("")

    L += ["## Fork clean-up against pages", "",
          "The target forks with P pages mapped; at the child's first stop its copy is "
          "cleaned, and its /proc/PID/maps checked for `memfd:ptss`. *per page*: the same "
          "child cleaned with one injected munmap per page plus one for the rest of the "
          "reservation, as a tracer whose pages are separate mappings must do.", "",
          "| pages | ptss_fork ms | injections | child clean | per page ms | injections |",
          "|---|---|---|---|---|---|"]
    fk = {(f["how"], f["pages"]): f for f in a["fork"]}
    for pages in sorted({f["pages"] for f in a["fork"]}):
        p, q = fk.get(("ptss_fork", pages)), fk.get(("per_page", pages))
        L.append(f"| {pages} | {span(p['ns'], 3, 1e-6) if p else '–'} | "
                 f"{','.join(map(str, p['injections'])) if p else '–'} | "
                 f"{'yes' if p and p['child_clean'] and p['child_had_pages'] else 'NO'} | "
                 f"{span(q['ns'], 3, 1e-6) if q else '–'} | "
                 f"{','.join(map(str, q['injections'])) if q else '–'} |")
    return "\n".join(L)


def fork_plot(a, outdir, tmp, title):
    """fork_cleanup.png: (data rows, gnuplot lines)."""
    fk = {(f["how"], f["pages"]): f for f in a["fork"]}
    rows = []
    for pages in sorted({x["pages"] for x in a["fork"]}):
        row = [str(pages)]
        for how in ("ptss_fork", "per_page"):
            s = fk[(how, pages)]["ns"] if (how, pages) in fk else None
            row += [str(s[k] / 1e6) for k in ("median", "min", "max")] if s else ["NaN"] * 3
        rows.append(row)
    return rows, [
        f"set output '{outdir}/fork_cleanup.png'",
        f"set title 'Fork clean-up time vs pages mapped (median, min-max) - {title}'",
        "set logscale xy",
        "set grid",
        "set xlabel 'pages mapped in the parent (64 entries each)'",
        "set ylabel 'ms to clean the fork child (log scale)'",
        "set key inside left top",
        "set xrange [0.7:6000]",
        f"plot '{tmp}/fork_cleanup.dat' using 1:2:3:4 with yerrorlines lw 2 lc rgb '#000000' "
        "title 'ptss_fork: one munmap (1 injection)', "
        "'' using 1:5:6:7 with yerrorlines lw 1.5 lc rgb '#c0504d' "
        "title 'per page: one munmap per page (P + 1 injections)'",
    ]


def per_hit_plot(a, outdir, tmp, title):
    """tracer_per_hit.png: ns per hit (loop) per tool, free and pinned; the untraced loop's
    own ns per call for scale. A figure at or below 0 (noise) cannot be drawn on a log scale."""
    by = {(h["tool"], h["placement"]): h["loop_ns_per_hit"] for h in a["per_hit"] if not h["threads"]}
    by.update({("untraced", u["placement"]): u["loop_ns_per_call"] for u in a["untraced"]})
    rows = []
    for tool in ["untraced"] + TOOLS:
        if not any((tool, p) in by for p in PLACEMENTS):
            continue
        row = [json.dumps(SHORT[tool])]
        for p in PLACEMENTS:
            s = by.get((tool, p))
            row += [str(s[k]) if s and s["min"] > 0 else "NaN" for k in ("median", "min", "max")]
        rows.append(row)
    return rows, [
        f"set output '{outdir}/tracer_per_hit.png'",
        f"set title 'ns per hit, loop (median, min-max) - {title}'",
        "set logscale y",
        "set grid ytics",
        "set style data histogram",
        "set style histogram errorbars gap 1 lw 1",
        "set style fill solid 0.6 border -1",
        "set boxwidth 0.9",
        "set ylabel 'ns per hit (log scale)'",
        "set xtics rotate by -25 scale 0",
        "set bmargin 7",
        "set key inside left top",
        f"plot '{tmp}/tracer_per_hit.dat' using 2:3:4:xtic(1) lc rgb '#4f81bd' title 'free', "
        "'' using 5:6:7 lc rgb '#c0504d' title 'pinned (tracer and target on one CPU)'",
    ]


def plot(a, outdir):
    gp = shutil.which("gnuplot")
    if not gp:
        print("tracer.py: gnuplot not found, no PNG", file=sys.stderr)
        return
    tmp = tempfile.mkdtemp(prefix="ptss-bench-")
    m = a["machine"]
    title = f"{m['cpu_model']}, {m['nproc']} CPUs, {a['mode']}"
    try:
        for name, make in (("fork_cleanup", fork_plot), ("tracer_per_hit", per_hit_plot)):
            rows, script = make(a, outdir, tmp, title)
            with open(os.path.join(tmp, name + ".dat"), "w") as f:
                f.writelines(" ".join(row) + "\n" for row in rows)
            with open(os.path.join(tmp, name + ".gp"), "w") as f:
                f.write("\n".join(["set terminal pngcairo size 900,540 noenhanced font ',10'"]
                                  + script) + "\n")
            res = subprocess.run([gp, os.path.join(tmp, name + ".gp")], capture_output=True, text=True)
            if res.returncode:
                print(f"tracer.py: gnuplot failed on {name}:\n" + res.stderr, file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description="The tracer benchmarks (see bench/README.md).")
    ap.add_argument("--quick", action="store_true", help="a short run")
    ap.add_argument("--build", default="build/bench-release")
    ap.add_argument("--results", default="bench/results")
    args = ap.parse_args()
    mode = "quick" if args.quick else "full"
    cfg = QUICK if args.quick else FULL
    os.makedirs(args.results, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="ptss-tracer-")
    raw = []
    try:
        tools = Tools(os.path.abspath(args.build), tmp)
        tools.probe()
        for t in TOOLS:
            if not tools.available[t]:
                print(f"bench/run: {tools.label[t]} not available here: {tools.why[t]}",
                      file=sys.stderr)
        tt = tools.thread_tool
        print(f"bench/run: tracer, {mode}: {cfg['rounds']} rounds of "
              + ", ".join(f"{tools.label[t]} N={cfg['n'][t]}" for t in TOOLS if tools.available[t])
              + (f"; {tools.label[tt]} with {' and '.join(map(str, THREADS))} threads, "
                 f"N={cfg['n'][tt]} per thread" if tt else ""), file=sys.stderr)
        hits_bench(tools, cfg, raw)
        inject_bench(os.path.abspath(args.build), cfg, raw)
        a = analyse(raw, tools, cfg, mode)
    finally:
        with open(os.path.join(args.results, "tracer.raw.tmp"), "w") as f:
            for rec in raw:
                f.write(json.dumps(rec) + "\n")
        shutil.rmtree(tmp, ignore_errors=True)
    with open(os.path.join(args.results, "tracer.json"), "w") as f:
        json.dump(a, f, indent=1)
        f.write("\n")
    md = markdown(a)
    with open(os.path.join(args.results, "tracer.md"), "w") as f:
        f.write(md + "\n")
    plot(a, os.path.abspath(args.results))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
