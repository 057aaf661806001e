#!/usr/bin/env python3
"""The tracer half of the benchmark suite (bench/run runs it after the allocator half).

1. Per-hit cost: bench_hit_target N (a loop calling the noinline bench_hit N times) run
   untraced and under `ptss trace`, `ltrace -x`, kernel uprobes through bpftrace and gdb
   (a breakpoint whose commands count and continue), side by side in each round, in an
   order rotated round by round. Each tool is run twice per round: as a user would run it
   (the scheduler places tracer and target) and with both pinned to one CPU. Hit counts
   are checked against N.
2. The cost of one injected system call, and 3. enable and fork clean-up against the
   page count: bench_inject (bench/inject.c) prints JSON lines, summarised here.

Writes tracer.json, tracer.md and fork_cleanup.png (gnuplot) under the results folder,
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

FULL = {"rounds": 7, "n": {"ptss": 100000, "uprobes": 100000, "ltrace": 10000, "gdb": 1000},
        "inject_k": 200, "inject_rounds": 15, "fork_reps": 10}
QUICK = {"rounds": 3, "n": {"ptss": 20000, "uprobes": 20000, "ltrace": 2000, "gdb": 300},
         "inject_k": 100, "inject_rounds": 5, "fork_reps": 3}
FORK_PAGES = [1, 10, 100, 1000, 4096]
TOOLS = ["ptss", "ltrace", "uprobes", "gdb"]
LABEL = {"ptss": "ptss trace", "ltrace": "ltrace -x", "uprobes": "uprobes (bpftrace)",
         "gdb": "gdb breakpoint"}
PLACEMENTS = ["free", "pinned"]
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


class Tools:
    """The command line of each tracer, and how to read its hit count."""

    def __init__(self, build, tmp):
        self.ptss = os.path.join(build, "tools", "ptss")
        self.hit = os.path.join(build, "bench", "bench_hit_target")
        self.tmp = tmp
        self.gdb_script = os.path.join(tmp, "count.gdb")
        with open(self.gdb_script, "w") as f:
            f.write(GDB_SCRIPT)
        self.ptss_out = os.path.join(tmp, "ptss.json")
        self.available = {}
        self.why = {}

    def argv(self, tool, n):
        hit = [self.hit, str(n)]
        if tool == "untraced":
            return hit
        if tool == "ptss":
            # The report goes to a file (read for the count); -q: no messages.
            if os.path.exists(self.ptss_out):
                os.unlink(self.ptss_out)
            return [self.ptss, "trace", "-q", "--format", "json", "-o", self.ptss_out,
                    "bench_hit", "--"] + hit
        if tool == "ltrace":
            return ["ltrace", "-x", "bench_hit", "-o", "/dev/null"] + hit
        if tool == "uprobes":
            return ["bpftrace", "-e", f"uprobe:{self.hit}:bench_hit {{ @n = count(); }}",
                    "-c", " ".join(hit)]
        if tool == "gdb":
            return ["gdb", "-batch", "-nx", "-q", "-x", self.gdb_script, "--args"] + hit
        raise ValueError(tool)

    def count(self, tool, out):
        """Hits the tracer saw in the run whose output is out (None: unknown)."""
        if tool == "ptss":
            try:
                with open(self.ptss_out) as f:
                    rep = json.load(f)
                return sum(p["hits"] for p in rep["probes"] if p["probe"].endswith(":bench_hit"))
            except (OSError, ValueError, KeyError):
                return None
        if tool == "uprobes":
            m = re.search(r"^@n: (\d+)", out, re.M)
            return int(m.group(1)) if m else None
        if tool == "gdb":
            m = re.search(r"gdb-hits (\d+)", out)
            return int(m.group(1)) if m else None
        return None

    def ltrace_count(self, n):
        """ltrace's own count of bench_hit calls (ltrace -c), from one more run."""
        path = os.path.join(self.tmp, "ltrace-c.txt")
        _, out, rc = run(["ltrace", "-c", "-x", "bench_hit", "-o", path, self.hit, str(n)])
        try:
            with open(path) as f:
                for line in f:
                    cols = line.split()
                    if len(cols) == 5 and cols[4] == "bench_hit":
                        return int(cols[3])
        except OSError:
            pass
        return None

    def probe(self):
        """Which tracers run here; the reason for each that does not."""
        n = 10
        for tool in TOOLS:
            exe = {"ptss": self.ptss, "ltrace": "ltrace", "uprobes": "bpftrace", "gdb": "gdb"}[tool]
            if not (os.access(exe, os.X_OK) if tool == "ptss" else shutil.which(exe)):
                self.available[tool] = False
                self.why[tool] = f"{os.path.basename(exe)} is not installed (scripts/deps installs it)"
                continue
            _, out, rc = run(self.argv(tool, n), timeout=120)
            got = self.ltrace_count(n) if tool == "ltrace" else self.count(tool, out)
            ok = rc == 0 and LOOP_RE.search(out) is not None and got == n
            self.available[tool] = ok
            if not ok:
                errors = [l.strip() for l in out.splitlines()
                          if re.search(r"error|denied|not permitted|cannot|failed", l, re.I)]
                self.why[tool] = (f"exit status {rc}, {'no' if got is None else got} hits "
                                  f"counted for {n}: "
                                  + ("; ".join(errors[:2]) or out.strip()[-200:]))


def hits_bench(tools, cfg, raw):
    """Every round: the untraced run for each N, then each tracer, free and pinned."""
    cpu = min(os.sched_getaffinity(0))
    pin = ["taskset", "-c", str(cpu)] if shutil.which("taskset") else None
    placements = PLACEMENTS if pin else ["free"]
    avail = [t for t in TOOLS if tools.available[t]]
    for r in range(cfg["rounds"]):
        for i in range(len(avail)):
            tool = avail[(i + r) % len(avail)]
            n = cfg["n"][tool]
            for placement in placements:
                prefix = pin if placement == "pinned" else []
                # The untraced run just before, in the same placement: ratios to it come
                # from runs seconds apart.
                for which in ("untraced", tool):
                    wall, out, rc = run(prefix + tools.argv(which, n))
                    m = LOOP_RE.search(out)
                    rec = {"type": "hits", "round": r, "tool": which, "for": tool,
                           "placement": placement, "n": n, "rc": rc, "wall_ns": wall * 1e9,
                           "loop_ns": int(m.group(2)) if m else None,
                           "count": n if which == "untraced" else tools.count(which, out)}
                    if which == "untraced" and m is None:
                        raise SystemExit(f"tracer.py: the target failed: {out[-300:]}")
                    raw.append(rec)
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


def analyse(raw, tools, cfg, mode):
    a = {"mode": mode, "machine": machine(), "config": cfg,
         "available": tools.available, "not_available_why": tools.why}

    # Per hit. Each traced run is paired with the untraced run just before it.
    hits = {}
    counts_ok = {}
    prev = {}
    for rec in raw:
        if rec["type"] != "hits":
            continue
        key = (rec["for"], rec["placement"])
        if rec["tool"] == "untraced":
            prev[key] = rec
            continue
        base = prev.get(key)
        n = rec["n"]
        h = hits.setdefault(key, {"n": n, "loop": {}, "wall": {}, "startup": {}, "failed": 0})
        if not base or rec["loop_ns"] is None or rec["rc"] != 0:
            h["failed"] += 1
            continue
        h["loop"][rec["round"]] = (rec["loop_ns"] - base["loop_ns"]) / n
        h["wall"][rec["round"]] = (rec["wall_ns"] - base["wall_ns"]) / n
        # What the whole command added besides the hits: start-up and tear-down.
        h["startup"][rec["round"]] = ((rec["wall_ns"] - base["wall_ns"])
                                      - (rec["loop_ns"] - base["loop_ns"]))
        counts_ok.setdefault(rec["tool"], set()).add(rec["count"] == n)
    ltc = [r for r in raw if r["type"] == "ltrace_count"]
    if ltc:
        counts_ok["ltrace"] = {ltc[0]["count"] == ltc[0]["n"]}
    a["counts"] = {t: (all(v) if v else None) for t, v in counts_ok.items()}
    a["ltrace_c_count"] = ltc[0] if ltc else None

    per_hit = []
    for (tool, placement), h in sorted(hits.items(), key=lambda kv: (TOOLS.index(kv[0][0]), kv[0][1])):
        if not h["loop"]:
            continue
        per_hit.append({"tool": tool, "placement": placement, "n": h["n"],
                        "loop_ns_per_hit": summary(h["loop"].values()),
                        "wall_ns_per_hit": summary(h["wall"].values()),
                        "startup_ms": summary([v / 1e6 for v in h["startup"].values()]),
                        "failed_runs": h["failed"]})
    a["per_hit"] = per_hit

    ratios = []
    for placement in PLACEMENTS:
        p = hits.get(("ptss", placement))
        if not p or not p["loop"]:
            continue
        for other in TOOLS[1:]:
            o = hits.get((other, placement))
            if not o or not o["loop"]:
                continue
            for measure in ("loop", "wall"):
                rs = [p[measure][k] / o[measure][k] for k in p[measure]
                      if k in o[measure] and o[measure][k] > 0]
                if rs:
                    ratios.append({"num": "ptss", "den": other, "placement": placement,
                                   "measure": measure, "ratio": summary(rs)})
    a["ratios"] = ratios

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
    goals = []

    def ratio_of(den, placement, measure="loop"):
        for r in ratios:
            if (r["den"], r["placement"], r["measure"]) == (den, placement, measure):
                return r["ratio"]
        return None

    for placement in PLACEMENTS:
        r = ratio_of("ltrace", placement)
        if r:
            goals.append({"goal": "per hit at most 1/5 of ltrace",
                          "measure": f"ptss / ltrace ns per hit (loop), {placement}",
                          "value": r, "target": "<= 0.2", "pass": r["median"] <= 0.2})
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


def markdown(a):
    m = a["machine"]
    L = [f"# Tracer benchmarks ({a['mode']})", "",
         f"{m['date']}: {m['cpu_model']}, nproc {m['nproc']} ({m['cpus_usable']} usable), "
         f"kernel {m['kernel']}, {m['compiler']}; load average at the end "
         f"{', '.join(map(str, m['loadavg_at_report']))}. Tools: {m['ltrace'] or 'no ltrace'}, "
         f"{m['bpftrace'] or 'no bpftrace'}, {m['gdb'] or 'no gdb'}.", "",
         "Figures are medians over rounds [min–max]. *free*: tracer and target placed by the "
         "scheduler, as a user runs them; *pinned*: both on one CPU (`taskset`).", ""]

    L += ["## Goals", "", "| goal | measure | measured | target | |", "|---|---|---|---|---|"]
    for g in a["goals"]:
        v = g["value"]
        if isinstance(v, dict) and "median" in v:
            val = span(v, 3)
        else:
            vals = {json.dumps(x) for x in v.values()}
            val = (f"{vals.pop().strip('[]')} for every P ({', '.join(v)} pages)" if len(vals) == 1
                   else ", ".join(f"P={k}: {x}" for k, x in v.items()))
        L.append(f"| {g['goal']} | {g['measure']} | {val} | {g['target']} | "
                 f"{'PASS' if g['pass'] else 'MISS'} |")
    L.append("")

    L += ["## Per-hit cost", "",
          "`bench_hit_target N` calls `bench_hit` N times. *loop*: the wall time of the loop, "
          "measured inside the target, minus the untraced loop, over N. *command*: the wall "
          "time of the whole command minus the untraced command, over N (the brief's formula: "
          "it includes each tracer's start-up and tear-down, shown in the last column).", "",
          "| tracer | placement | N | ns per hit (loop) | ns per hit (command) | start-up + tear-down ms | hits counted = N |",
          "|---|---|---|---|---|---|---|"]
    for h in a["per_hit"]:
        ok = a["counts"].get(h["tool"])
        L.append(f"| {LABEL[h['tool']]} | {h['placement']} | {h['n']} | {span(h['loop_ns_per_hit'])} | "
                 f"{span(h['wall_ns_per_hit'])} | {span(h['startup_ms'])} | "
                 f"{'yes' if ok else 'NO' if ok is False else '?'} |")
    for t in TOOLS:
        if not a["available"].get(t, False):
            L.append(f"| {LABEL[t]} | – | – | not available here: {a['not_available_why'].get(t, '?')} | | | |")
    if a["ltrace_c_count"]:
        c = a["ltrace_c_count"]
        L.append("")
        L.append(f"ltrace's own count (`ltrace -c -x bench_hit`, N = {c['n']}): {c['count']} calls.")
    L += ["", "**Ratios** (round by round, then summarised):", "",
          "| ratio | placement | loop | command |", "|---|---|---|---|"]
    by = {}
    for r in a["ratios"]:
        by.setdefault((r["den"], r["placement"]), {})[r["measure"]] = r["ratio"]
    for (den, placement), v in by.items():
        L.append(f"| ptss / {LABEL[den]} | {placement} | {span(v.get('loop'), 3)} | "
                 f"{span(v.get('wall'), 3)} |")
    L.append("")

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


def plot(a, outdir):
    gp = shutil.which("gnuplot")
    if not gp:
        print("tracer.py: gnuplot not found, no PNG", file=sys.stderr)
        return
    tmp = tempfile.mkdtemp(prefix="ptss-bench-")
    try:
        fk = {(f["how"], f["pages"]): f for f in a["fork"]}
        with open(os.path.join(tmp, "fork.dat"), "w") as f:
            for pages in sorted({x["pages"] for x in a["fork"]}):
                row = [str(pages)]
                for how in ("ptss_fork", "per_page"):
                    s = fk[(how, pages)]["ns"] if (how, pages) in fk else None
                    row += [str(s[k] / 1e6) for k in ("median", "min", "max")] if s else ["NaN"] * 3
                f.write(" ".join(row) + "\n")
        m = a["machine"]
        title = f"{m['cpu_model']}, {m['nproc']} CPUs, {a['mode']}"
        script = [
            "set terminal pngcairo size 900,540 noenhanced font ',10'",
            f"set output '{outdir}/fork_cleanup.png'",
            f"set title 'Fork clean-up time vs pages mapped (median, min-max) - {title}'",
            "set logscale xy",
            "set grid",
            "set xlabel 'pages mapped in the parent (64 entries each)'",
            "set ylabel 'ms to clean the fork child (log scale)'",
            "set key inside left top",
            "set xrange [0.7:6000]",
            f"plot '{tmp}/fork.dat' using 1:2:3:4 with yerrorlines lw 2 lc rgb '#000000' "
            "title 'ptss_fork: one munmap (1 injection)', "
            "'' using 1:5:6:7 with yerrorlines lw 1.5 lc rgb '#c0504d' "
            "title 'per page: one munmap per page (P + 1 injections)'",
        ]
        with open(os.path.join(tmp, "plot.gp"), "w") as f:
            f.write("\n".join(script) + "\n")
        res = subprocess.run([gp, os.path.join(tmp, "plot.gp")], capture_output=True, text=True)
        if res.returncode:
            print("tracer.py: gnuplot failed:\n" + res.stderr, file=sys.stderr)
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
                print(f"bench/run: {LABEL[t]} not available here: {tools.why[t]}", file=sys.stderr)
        print(f"bench/run: tracer, {mode}: {cfg['rounds']} rounds of "
              + ", ".join(f"{LABEL[t]} N={cfg['n'][t]}" for t in TOOLS if tools.available[t]),
              file=sys.stderr)
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
