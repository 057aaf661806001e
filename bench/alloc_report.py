#!/usr/bin/env python3
"""Summarises the allocator bench (bench/run): raw JSON lines in, report out.

Writes alloc.json (every figure), alloc.md (tables and goals) and, with gnuplot,
alloc_pair.png, alloc_threads.png and alloc_burst.png. Prints alloc.md.

Figures are medians over rounds with min and max. Ratios are taken round by round (both
sides measured minutes apart at most, in the same round) and then summarised the same way,
so drift on a shared machine hits both sides of a ratio alike. Goals are reported as
PASS or MISS; nothing here fails.

usage: alloc_report.py RAW OUTDIR MODE
"""
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# Report order: ptss first (its per-caller path, then its shared path), its diagnostics,
# the lock-free and locked lists, the allocators, and the floor.
ORDER = ["ptss", "ptss_shared", "ptss_list", "ptss_list_cnt", "treiber", "ck_stack", "bitmap",
         "mutex", "spin", "glibc_malloc", "jemalloc", "mimalloc", "cas2"]
DIAGNOSTIC = {"ptss_list", "ptss_list_cnt"}
COLOR = {"ptss": "#000000", "ptss_shared": "#1f3f9f", "ptss_list": "#555555",
         "ptss_list_cnt": "#888888",
         "treiber": "#2ca02c", "ck_stack": "#17becf", "bitmap": "#ff7f0e", "mutex": "#d62728",
         "spin": "#e377c2", "glibc_malloc": "#8c564b", "jemalloc": "#9467bd",
         "mimalloc": "#bcbd22", "cas2": "#7f7f7f"}
DESCRIPTION = {
    "ptss": "ptss_cache_claim/ptss_cache_release: a cache per caller, public API, self space",
    "ptss_shared": "ptss_claim/ptss_release: the shared list, public API, self space",
    "ptss_list": "diagnostic: ptss's free list (src/freelist.h) alone, inlined",
    "ptss_list_cnt": "diagnostic: ptss_list + a shared claimed counter (ptss before issue 11)",
    "treiber": "seed's list: plain-pointer Treiber stack (ABA-prone)",
    "ck_stack": "Concurrency Kit ck_stack MPMC (double-width CAS pop)",
    "bitmap": "bitmap, find zero bit + atomic set (uprobes XOL style)",
    "mutex": "index LIFO under pthread_mutex",
    "spin": "index LIFO under pthread_spinlock",
    "glibc_malloc": "glibc malloc(64)/free",
    "jemalloc": "jemalloc mallocx(64)/dallocx",
    "mimalloc": "mimalloc mi_malloc(64)/mi_free",
    "cas2": "floor: two bare 64-bit CAS on one word",
}


def summary(values):
    v = sorted(values)
    return {"median": statistics.median(v), "min": v[0], "max": v[-1], "n": len(v)}


def order_key(name):
    return ORDER.index(name) if name in ORDER else len(ORDER)


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
    try:
        cc = subprocess.run(["cc", "--version"], capture_output=True, text=True,
                            check=False).stdout.splitlines()[0]
    except (OSError, IndexError):
        cc = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": platform.release(),
        "compiler": cc,
        "loadavg_at_report": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }


def load(path):
    recs = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                recs.append(json.loads(line))
    return recs


def per_round(recs, pick):
    """{round: value} for the records that pick() selects (value or None)."""
    out = {}
    for r in recs:
        v = pick(r)
        if v is not None:
            out[r["round"]] = v
    return out


def ratio(num, den):
    """Summary of num/den taken round by round, over rounds where both exist."""
    rs = [num[k] / den[k] for k in num if k in den and den[k] > 0]
    return summary(rs) if rs else None


def analyse(recs, mode):
    info = {}
    for r in recs:
        if r["type"] == "info":
            info[r["variant"]] = {"bytes_per_entry": r["bytes_per_entry"], "note": r["note"],
                                  "cpus": r["cpus"], "pool": r["pool"]}
    variants = sorted(info, key=order_key)
    ncpus = max((i["cpus"] for i in info.values()), default=1)

    pair = {}
    for r in recs:
        if r["type"] == "pair":
            key = (r["variant"], r["threads"], r["hold"])
            pair.setdefault(key, []).append(r)
    pairs = []
    for (v, t, h), rs in sorted(pair.items(), key=lambda kv: (order_key(kv[0][0]), kv[0][1:])):
        pairs.append({"variant": v, "threads": t, "hold": h,
                      "cpu_ns_per_pair": summary([r["cpu_ns_per_pair"] for r in rs]),
                      "mpairs_s": summary([r["mpairs_s"] for r in rs])})
    threads = sorted({p["threads"] for p in pairs})
    holds = sorted({p["hold"] for p in pairs})

    churn = {}
    for r in recs:
        if r["type"] == "churn":
            churn.setdefault((r["variant"], r["window"]), []).append(r)
    churns = []
    for (v, w), rs in sorted(churn.items(), key=lambda kv: (order_key(kv[0][0]), kv[0][1])):
        churns.append({"variant": v, "window": w, "threads": rs[0]["threads"],
                       "ns_per_thread": summary([r["ns_per_thread"] for r in rs]),
                       "ns_per_thread_bare": summary([r["ns_per_thread_bare"] for r in rs]),
                       "delta_ns": summary([r["ns_per_thread"] - r["ns_per_thread_bare"]
                                            for r in rs]),
                       "ns_in_thread": summary([r["ns_in_thread"] for r in rs])})

    burst = {}
    for r in recs:
        if r["type"] == "burst":
            burst.setdefault((r["model"], r["k"]), []).append(r)
    bursts = []
    for (m, k), rs in sorted(burst.items(), key=lambda kv: (kv[0][0] != "ptss", kv[0][1])):
        bursts.append({"model": m, "k": k, "needed": rs[0]["needed"],
                       "pages": summary([r["pages"] for r in rs]),
                       "over_max": max(r["pages"] - r["needed"] for r in rs)})

    def single(v, field="cpu_ns_per_pair"):
        return per_round(recs, lambda r: r[field] if r["type"] == "pair" and r["variant"] == v
                         and r["threads"] == 1 and r["hold"] == 0 else None)

    def at(v, t, h=0):
        return per_round(recs, lambda r: r["mpairs_s"] if r["type"] == "pair" and
                         r["variant"] == v and r["threads"] == t and r["hold"] == h else None)

    over = 8 * ncpus
    goals = []

    def goal(name, what, r, target, better, variant="ptss"):
        g = {"goal": name, "measure": what, "target": target, "ratio": r, "variant": variant,
             "better": better}
        if r is None:
            g["status"] = "n/a"
        else:
            ok = r["median"] <= target if better == "lower" else r["median"] >= target
            g["status"] = "PASS" if ok else "MISS"
        goals.append(g)

    # Issue 11's goals, for the API pair a caller uses to go fast (its own cache: "ptss"),
    # and the same measures for the shared path ("ptss_shared"), for reference.
    for v in ["ptss", "ptss_shared"]:
        goal("ABA safety costs at most 15% over a plain Treiber stack",
             f"{v} / treiber, ns per pair, 1 thread",
             ratio(single(v), single("treiber")), 1.15, "lower", v)
        goal("a pair at most 2x two bare CAS", f"{v} / cas2, ns per pair, 1 thread",
             ratio(single(v), single("cas2")), 2.0, "lower", v)
        goal("1.5x faster than the mutex list, 1 thread", f"mutex / {v}, ns per pair, 1 thread",
             ratio(single("mutex"), single(v)), 1.5, "higher", v)
        goal("2x the mutex list at 8x oversubscription",
             f"{v} / mutex, pairs/s, {over} threads on {ncpus} CPUs",
             ratio(at(v, over), at("mutex", over)), 2.0, "higher", v)
    ptss_burst = [b for b in bursts if b["model"] == "ptss"]
    if ptss_burst:
        worst = max(b["over_max"] for b in ptss_burst)
        goals.append({"goal": "no regression in burst growth: exactly ceil(K/64) pages",
                      "measure": "max(pages mapped - ceil(K/64)) over every K and repetition",
                      "target": 0, "ratio": {"median": worst, "min": worst, "max": worst},
                      "status": "PASS" if worst == 0 else "MISS", "better": "lower",
                      "variant": "ptss"})

    # Not goals: where ptss's cost goes, step by step, and the other comparisons.
    ratios = []
    for num, den, what in [("ptss_list", "treiber", "ABA-safe list alone vs plain Treiber"),
                           ("ptss_list_cnt", "ptss_list",
                            "+ a shared claimed counter (what issue 11 took off)"),
                           ("ptss_shared", "ptss_list",
                            "+ library call, checks and high-water note (shared path)"),
                           ("ptss", "ptss_shared", "per-caller cache vs the shared path"),
                           ("ptss", "mutex", "per-caller cache vs the mutex list"),
                           ("ck_stack", "ptss", "ck_stack (double-width CAS) vs ptss"),
                           ("bitmap", "ptss", "bitmap vs ptss"),
                           ("spin", "ptss", "spinlock list vs ptss"),
                           ("glibc_malloc", "ptss", "glibc malloc vs ptss"),
                           ("jemalloc", "ptss", "jemalloc vs ptss"),
                           ("mimalloc", "ptss", "mimalloc vs ptss")]:
        r = ratio(single(num), single(den))
        if r:
            ratios.append({"ratio": f"{num} / {den}", "what": what, "value": r})
    for t in threads:
        if t > 1:
            for num, den in [("ptss", "mutex"), ("ptss", "treiber"), ("ptss", "spin"),
                             ("ptss_shared", "mutex"), ("ptss_shared", "treiber")]:
                r = ratio(at(num, t), at(den, t))
                if r:
                    ratios.append({"ratio": f"{num} / {den} pairs/s @{t}",
                                   "what": f"throughput, {t} threads, hold 0", "value": r})

    return {
        "mode": mode,
        "machine": machine(),
        "rounds": len({r["round"] for r in recs if "round" in r}),
        "cpus": ncpus,
        "variants": {v: dict(info[v], description=DESCRIPTION.get(v, v)) for v in variants},
        "threads": threads,
        "holds": holds,
        "pair": pairs,
        "churn": churns,
        "burst": bursts,
        "goals": goals,
        "ratios": ratios,
    }


def fmt(x, digits=2):
    if x is None:
        return "–"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{digits}f}"


def span(s, digits=2):
    return f"{fmt(s['median'], digits)} [{fmt(s['min'], digits)}–{fmt(s['max'], digits)}]"


def markdown(a):
    m = a["machine"]
    out = []
    w = out.append
    w("# Allocator benchmark")
    w("")
    w(f"{m['date']} — {m['cpu_model']}, nproc {m['nproc']} ({m['cpus_usable']} usable), "
      f"kernel {m['kernel']}, {m['compiler']}; mode `{a['mode']}`, {a['rounds']} rounds, "
      f"load average at the end {m['loadavg_at_report']}.")
    w("")
    w("Medians over rounds, [min–max]. Ratios are taken round by round, then summarised. "
      "ns per pair is CPU time of the thread(s) doing the work (immune to time others' "
      "processes take on a shared machine); pairs/s is wall-clock throughput. With several "
      "threads, figures depend on how far a cache line travels between the CPUs, which on a "
      "VM can change during a run: compare variants within this run only.")
    w("")
    def goal_table(gs):
        w("| goal | measure | measured | target | |")
        w("|---|---|---|---|---|")
        for g in gs:
            sign = "≤" if g.get("better") == "lower" else "≥"
            meas = span(g["ratio"]) if g["ratio"] else "–"
            w(f"| {g['goal']} | {g['measure']} | {meas} | {sign} {g['target']} | "
              f"**{g['status']}** |")
        w("")

    w("## Goals (issue 11)")
    w("")
    w("`ptss` is the API pair a caller uses for speed: `ptss_cache_claim` / "
      "`ptss_cache_release` on a cache of its own (`ptss_cache_new`), each call a call into "
      "`libptss.so`. Ratios are taken round by round within this run.")
    w("")
    goal_table([g for g in a["goals"] if g.get("variant", "ptss") == "ptss"])
    shared = [g for g in a["goals"] if g.get("variant") == "ptss_shared"]
    if shared:
        w("The same measures for the shared path (`ptss_claim` / `ptss_release`, no cache: "
          "what a caller without a cache, e.g. the tracer, pays), for reference:")
        w("")
        goal_table(shared)

    singles = {p["variant"]: p for p in a["pair"] if p["threads"] == 1 and p["hold"] == 0}
    ptss = singles.get("ptss")
    w("## One thread: ns per claim+release pair")
    w("")
    w("| variant | what | ns per pair | vs ptss | tracer bytes per entry |")
    w("|---|---|---|---|---|")
    for v, info in a["variants"].items():
        if v not in singles:
            continue
        s = singles[v]["cpu_ns_per_pair"]
        rel = f"{s['median'] / ptss['cpu_ns_per_pair']['median']:.2f}x" if ptss else "–"
        w(f"| {v} | {info['description']} | {span(s)} | {rel} | "
          f"{fmt(info['bytes_per_entry'], 3)} |")
    w("")

    for h in a["holds"]:
        w(f"## Throughput vs threads, hold {h}: million pairs per second (wall clock)")
        w("")
        w("| variant | " + " | ".join(f"{t} thr" for t in a["threads"]) + " |")
        w("|---|" + "---|" * len(a["threads"]))
        for v in a["variants"]:
            row = {p["threads"]: p for p in a["pair"] if p["variant"] == v and p["hold"] == h}
            if row:
                w(f"| {v} | " + " | ".join(fmt(row[t]["mpairs_s"]["median"], 1) if t in row
                                           else "–" for t in a["threads"]) + " |")
        w("")
    w("## CPU ns per pair vs threads, hold 0 (what contention costs: retries, spinning)")
    w("")
    w("| variant | " + " | ".join(f"{t} thr" for t in a["threads"]) + " |")
    w("|---|" + "---|" * len(a["threads"]))
    for v in a["variants"]:
        row = {p["threads"]: p for p in a["pair"] if p["variant"] == v and p["hold"] == 0}
        if row:
            w(f"| {v} | " + " | ".join(fmt(row[t]["cpu_ns_per_pair"]["median"], 1) if t in row
                                       else "–" for t in a["threads"]) + " |")
    w("")

    if a["ratios"]:
        w("## Ratios (not goals)")
        w("")
        w("| ratio | what | median [min–max] |")
        w("|---|---|---|")
        for r in a["ratios"]:
            w(f"| {r['ratio']} | {r['what']} | {span(r['value'])} |")
        w("")

    if a["churn"]:
        w("## Thread churn: ns per thread lifetime (create, claim once, release, exit, join)")
        w("")
        w("`in thread`: what the claim and the release took inside the new thread (cold "
          "caches, first use of any per-thread state). `lifetime` is wall time per thread, "
          "`bare` the same without the claim, in alternating chunks; `delta` is their "
          "difference, which also holds per-thread teardown at exit. Thread creation "
          "dominates a lifetime: a delta of a few µs either way is noise on a shared machine.")
        w("")
        w("| variant | threads alive | in thread, ns | lifetime, ns | bare, ns | delta, ns |")
        w("|---|---|---|---|---|---|")
        for c in a["churn"]:
            w(f"| {c['variant']} | {c['window']} | {span(c['ns_in_thread'], 0)} | "
              f"{fmt(c['ns_per_thread']['median'], 0)} | "
              f"{fmt(c['ns_per_thread_bare']['median'], 0)} | {span(c['delta_ns'], 0)} |")
        w("")

    if a["burst"]:
        w("## Burst growth: K threads claim at once from an empty pool (64 entries per page)")
        w("")
        w("`seed` is a local model of the seed's growth (no second look under the lock), "
          "not the seed itself. Its worst case is K pages.")
        w("")
        w("| K | needed | ptss pages | seed-model pages | ptss over | seed over (max) |")
        w("|---|---|---|---|---|---|")
        ks = sorted({b["k"] for b in a["burst"]})
        by = {(b["model"], b["k"]): b for b in a["burst"]}
        for k in ks:
            p, s = by.get(("ptss", k)), by.get(("seed", k))
            need = (p or s)["needed"]
            w(f"| {k} | {need} | {span(p['pages'], 0) if p else '–'} | "
              f"{span(s['pages'], 0) if s else '–'} | {p['over_max'] if p else '–'} | "
              f"{s['over_max'] if s else '–'} |")
        w("")

    w("## What each variant keeps per entry")
    w("")
    w("| variant | bytes | layout and atomics |")
    w("|---|---|---|")
    for v, info in a["variants"].items():
        w(f"| {v} | {fmt(info['bytes_per_entry'], 3)} | {info['note']} |")
    w("")
    return "\n".join(out)


def plots(a, outdir):
    gp = shutil.which("gnuplot")
    if not gp:
        print("alloc_report: gnuplot not found, no PNGs", file=sys.stderr)
        return
    tmp = tempfile.mkdtemp(prefix="ptss-bench-")
    try:
        singles = [p for p in a["pair"] if p["threads"] == 1 and p["hold"] == 0]
        singles.sort(key=lambda p: order_key(p["variant"]))
        with open(os.path.join(tmp, "pair.dat"), "w") as f:
            for p in singles:
                s = p["cpu_ns_per_pair"]
                color = int(COLOR.get(p["variant"], "#4472c4")[1:], 16)
                f.write(f"\"{p['variant']}\" {s['median']} {s['min']} {s['max']} {color}\n")
        tvars = [v for v in a["variants"] if v not in DIAGNOSTIC]
        for h in a["holds"]:
            with open(os.path.join(tmp, f"threads{h}.dat"), "w") as f:
                for v in tvars:
                    rows = [p for p in a["pair"] if p["variant"] == v and p["hold"] == h]
                    f.write(f"# {v}\n")
                    for p in sorted(rows, key=lambda p: p["threads"]):
                        s = p["mpairs_s"]
                        f.write(f"{p['threads']} {s['median']} {s['min']} {s['max']}\n")
                    f.write("\n\n")
        with open(os.path.join(tmp, "burst.dat"), "w") as f:
            by = {(b["model"], b["k"]): b for b in a["burst"]}
            for k in sorted({b["k"] for b in a["burst"]}):
                p, s = by.get(("ptss", k)), by.get(("seed", k))
                if p and s:
                    f.write(f"{k} {p['needed']} {p['pages']['median']} {p['pages']['max']} "
                            f"{s['pages']['median']} {s['pages']['max']}\n")

        m = a["machine"]
        title = f"{m['cpu_model']}, {a['cpus']} CPUs, {a['mode']}"
        holds = a["holds"]
        script = [
            "set terminal pngcairo size 1000,560 noenhanced font ',10'",
            "set grid ytics",
            "set key outside right top",
            # One thread, ns per pair, min-max as error bars.
            f"set output '{outdir}/alloc_pair.png'",
            f"set title 'One thread: CPU ns per claim+release pair (median, min-max) - {title}'",
            "set ylabel 'ns per pair'",
            "set style fill solid 0.6 border -1",
            "set offsets 0.7, 0.7, 0, 0",
            "set xtics rotate by -35",
            "set yrange [0:*]",
            "unset key",
            f"plot '{tmp}/pair.dat' using 0:2:3:4:(0.6):5:xtic(1) with boxerrorbars lc rgb variable, "
            "'' using 0:($4 + 0.4):(sprintf('%.1f', $2)) with labels",
            "set offsets 0, 0, 0, 0",
            "set style data linespoints",
            "set key outside right top",
            "set xtics norotate",
            # Throughput vs threads, one panel per hold.
            f"set output '{outdir}/alloc_threads.png'",
            "set terminal pngcairo size 1200,560 noenhanced font ',10'",
            f"set multiplot layout 1,{len(holds)} title 'Throughput vs threads - {title}'",
            "set logscale x 2",
            "set xlabel 'threads'",
            "set ylabel 'million pairs per second (median)'",
        ]
        for i, h in enumerate(holds):
            script.append(f"set title 'each thread also holding {h} entries'")
            if i < len(holds) - 1:
                script.append("unset key")
            else:
                script.append("set key outside right top")
            script.append("plot " + ", ".join(
                f"'{tmp}/threads{h}.dat' index {j} using 1:2 title '{v}' "
                f"lc rgb '{COLOR.get(v, '#4472c4')}' lw {3 if v == 'ptss' else 1.5}"
                + (" dt 2" if v == "cas2" else "")
                for j, v in enumerate(tvars)))
        script += [
            "unset multiplot",
            "unset logscale x",
            # Burst growth.
            "set terminal pngcairo size 900,520 noenhanced font ',10'",
            f"set output '{outdir}/alloc_burst.png'",
            f"set title 'Burst growth: pages mapped for K threads claiming at once - {title}'",
            "set style data histogram",
            "set style histogram clustered gap 1",
            "set style fill solid 0.7 border -1",
            "set logscale y",
            "set yrange [0.5:*]",
            "set xtics norotate",
            "set xlabel 'K threads'",
            "set ylabel 'pages (median over repetitions; log scale)'",
            "set key inside left top",
            f"plot '{tmp}/burst.dat' using 2:xtic(1) title 'needed ceil(K/64)' lc rgb '#999999', "
            f"'' using 3 title 'ptss' lc rgb '#4472c4', "
            f"'' using 5 title 'seed model (racing growth)' lc rgb '#c0504d'",
        ]
        with open(os.path.join(tmp, "plot.gp"), "w") as f:
            f.write("\n".join(script) + "\n")
        res = subprocess.run([gp, os.path.join(tmp, "plot.gp")], capture_output=True, text=True)
        if res.returncode:
            print("alloc_report: gnuplot failed:\n" + res.stderr, file=sys.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    raw, outdir, mode = sys.argv[1:]
    a = analyse(load(raw), mode)
    os.makedirs(outdir, exist_ok=True)
    with open(os.path.join(outdir, "alloc.json"), "w") as f:
        json.dump(a, f, indent=1)
        f.write("\n")
    md = markdown(a)
    with open(os.path.join(outdir, "alloc.md"), "w") as f:
        f.write(md + "\n")
    plots(a, os.path.abspath(outdir))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
