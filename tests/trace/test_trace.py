#!/usr/bin/env python3
"""End-to-end tests of `ptss trace` on the bundled targets: exact counts per thread and in
total, output identical to an untraced run, forks, execs, libraries, dlopen, attach and
detach, signals, the no-scratch fallback, and bad input with its exit status.

usage: test_trace.py SCENARIO     (paths of the programs come from the environment)
"""
import json, os, re, signal, subprocess, sys, tempfile, time

from tracetest import *  # noqa: F401,F403


# ---- scenarios ----

def workload_exact():
    """Threads that come and go, signal handlers calling probed functions: exact per thread."""
    cmd = [T["WORKLOAD"], "--signals", "--threads", "6", "--rounds", "200"]
    probes = ["work_alpha", "work_beta", "work_gamma", "on_signal_work"]
    rc, out, err, rep = trace(probes, cmd)
    check(rc == 0, f"exit status {rc}: {err}")
    compare_counts(rep, expected(err), "workload", probes)
    check(out == untraced(cmd).stdout, "stdout differs from an untraced run")
    # Per thread: the workload prints each worker's own counts.
    per_thread = {int(m.group(1)): dict(kv.split("=") for kv in m.group(2).split())
                  for m in map(THREAD.match, err.splitlines()) if m}
    check(len(per_thread) == 18, f"expected 18 worker threads, saw {len(per_thread)}")
    for probe in rep["probes"]:
        fn = probe["probe"].split(":", 1)[1]
        check(sum(probe["threads"].values()) == probe["hits"], f"{fn}: threads do not sum to hits")
        for tid, want in per_thread.items():
            got = probe["threads"].get(str(tid), 0)
            check(got == int(want[fn]), f"{fn} thread {tid}: {got} != {want[fn]}")
    check(rep["fallbacks"] == 0 and rep["scratch"]["claim_failures"] == 0, "unexpected fallback")
    check(rep["scratch"]["pages"] == 1, f"pages {rep['scratch']['pages']}: over-allocated")


def fork_untraced_child():
    """Without -f the child runs untraced and unharmed; only the parent's calls count."""
    cmd = [T["WORKLOAD"], "--fork"]
    probes = ["work_alpha", "work_gamma"]
    rc, out, err, rep = trace(probes, cmd)
    check(rc == 0, f"exit status {rc}: {err[-2000:]}")
    check("image=fork" in err, "the child did not run to its end")
    compare_counts(rep, expected(err, {"main"}), "parent only", probes)
    check(out == untraced(cmd).stdout, "stdout differs from an untraced run")


def fork_followed():
    """With -f the child's calls count too."""
    cmd = [T["WORKLOAD"], "--fork"]
    probes = ["work_alpha", "work_gamma"]
    rc, out, err, rep = trace(probes, cmd, extra=["-f"])
    check(rc == 0, f"exit status {rc}")
    compare_counts(rep, expected(err), "parent and child", probes)


def exec_followed():
    """The started program execs itself: the new image's probes are placed again."""
    cmd = [T["WORKLOAD"], "--exec", "--signals"]
    probes = ["work_alpha", "work_gamma", "on_signal_work"]
    rc, out, err, rep = trace(probes, cmd)
    check(rc == 0, f"exit status {rc}")
    compare_counts(rep, expected(err), "both images", probes)
    check(out == untraced(cmd).stdout, "stdout differs from an untraced run")


def insn_classes(binary):
    """One probe per class of first instruction; results identical to an untraced run."""
    cmd = [binary, "--rounds", "5"]
    base = untraced(cmd)
    fns = [l.split()[0] for l in base.stdout.splitlines()]
    probes = fns + ["insn_helper_*"]
    rc, out, err, rep = trace(probes, cmd)
    check(rc == 0, f"exit status {rc}: {err}")
    check(out == base.stdout, "results differ from an untraced run")
    compare_counts(rep, expected(err), "instruction classes", probes)
    check(len(rep["probes"]) == len(fns) + 4, "a probe is missing from the report")


def shared_library():
    cmd = [T["LIB_USER"], "--calls", "25"]
    rc, out, err, rep = trace(["libprobed:probed_lib_fn"], cmd)
    check(rc == 0, f"exit status {rc}")
    compare_counts(rep, expected(err), "shared library", ["probed_lib_fn"])
    check(rep["probes"][0]["module"].endswith("libprobed.so"), "wrong module")


def dlopen_later():
    """A probe whose library is loaded later with dlopen is armed when it appears."""
    cmd = [T["DLOPEN_USER"], T["LIBPROBED"], "--calls", "12"]
    rc, out, err, rep = trace(["libprobed:probed_lib_fn"], cmd)
    check(rc == 0, f"exit status {rc}: {err}")
    compare_counts(rep, expected(err), "dlopen", ["probed_lib_fn"])


def attach_and_detach(how):
    """Attach with -p, count, detach (--duration or SIGINT): original bytes, no pages left."""
    tgt = subprocess.Popen(WRAP + [T["PTRACE_TARGET"], "3"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, bufsize=1)
    check(tgt.stdout.readline().startswith("ready"), "target did not start")
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        args = [*PTSS_CMD, "trace", "-q", "--format", "json", "-o", out.name, "-p", str(tgt.pid), "probe_me"]
        if how == "duration":
            args[-3:-3] = ["--duration", "3"]
        tr = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
        time.sleep(1.5 if len(PTSS_CMD) == 1 else 2.5)  # attached and armed by now
        sym = None
        for _ in range(5):
            tgt.stdin.write("call\n")
            check(tgt.stdout.readline().strip() == "call 42", "wrong result while traced")
        maps = open(f"/proc/{tgt.pid}/maps").read()
        check("memfd:ptss" in maps, "no scratch pages while traced")
        check(not any(l.split()[1][1:3] == "wx" for l in maps.splitlines()), "a W+X mapping")
        if how == "sigint":
            tr.send_signal(signal.SIGINT)
        err = tr.communicate(timeout=30)[1]
        check(tr.returncode == 0, f"ptss exit status {tr.returncode}: {err}")
        rep = json.loads(open(out.name).read())
    check(rep["probes"][0]["hits"] == 5, f"counted {rep['probes'][0]['hits']} calls, made 5")
    addr = int(rep["probes"][0]["address"], 16)
    # The ELF file's bytes at the function (read from an untraced copy of the process image).
    maps = open(f"/proc/{tgt.pid}/maps").read()
    check("memfd:ptss" not in maps, "scratch pages left after detach")
    check(not armed(tgt.pid, addr), "probe left in the target after detach")
    tgt.stdin.write("call\nwake 3\nquit\n")
    rest = tgt.communicate(timeout=30)[0]
    check(rest.strip() == "call 42" and tgt.returncode == 0, "target harmed by the detach")


def original_bytes_restored():
    """After a detach every probe address holds the original bytes (compared to untraced)."""
    tgt = subprocess.Popen(WRAP + [T["PTRACE_TARGET"], "1"], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, bufsize=1)
    tgt.stdout.readline()
    nm = subprocess.run(["nm", T["PTRACE_TARGET"]], capture_output=True, text=True).stdout
    off = int(next(l.split()[0] for l in nm.splitlines() if l.endswith(" probe_me")), 16)
    base = next(int(l.split("-")[0], 16) for l in open(f"/proc/{tgt.pid}/maps")
                if T["PTRACE_TARGET"] in l and l.split()[2] == "00000000")
    before = read_mem(tgt.pid, base + off, 16)
    tr = subprocess.run([*PTSS_CMD, "trace", "-q", "--duration", "0.5", "-p", str(tgt.pid), "probe_me"],
                        capture_output=True, text=True, timeout=30)
    check(tr.returncode == 0, f"ptss exit status {tr.returncode}: {tr.stderr}")
    check(read_mem(tgt.pid, base + off, 16) == before, "bytes differ after detach")
    tgt.stdin.write("wake 1\nquit\n")
    tgt.communicate(timeout=30)
    check(tgt.returncode == 0, "target harmed")


def fallback_without_scratch():
    """The target cannot map scratch (seccomp refuses memfd_create): hits still exact."""
    cmd = [T["PTRACE_TARGET"], "1", "seccomp-errno-exec"]
    stdin = "call\nspawn 3\ncall\ncall\ncall\nwake 4\nquit\n"
    rc, out, err, rep = trace(["probe_me"], cmd, stdin=stdin)
    check(rc == 0, f"exit status {rc}: {err}")
    check(out.count("call 42") == 4, "wrong results")
    check(rep["probes"][0]["hits"] == 4, f"counted {rep['probes'][0]['hits']}, made 4")
    check(rep["fallbacks"] == 4 and rep["scratch"]["claim_failures"] > 0, "fallback not reported")


def fallback_many_threads():
    """--no-scratch: every hit of many threads, signals included, through the fallback."""
    cmd = [T["WORKLOAD"], "--signals", "--threads", "6", "--rounds", "40"]
    probes = ["work_alpha", "work_beta", "on_signal_work"]
    rc, out, err, rep = trace(probes, cmd, extra=["--no-scratch"])
    check(rc == 0, f"exit status {rc}: {err[-2000:]}")
    compare_counts(rep, expected(err), "fallback", probes)
    check(out == untraced(cmd).stdout, "stdout differs from an untraced run")
    check(rep["fallbacks"] == sum(hits(rep).values()), "not every hit took the fallback")
    check(rep["scratch"]["pages"] == 0, "pages mapped with --no-scratch")


def bad_input():
    """Each bad input: one line on stderr starting 'ptss:', and its documented status."""
    def run(args, want, pattern, prefix=(), **kw):
        p = subprocess.run([*prefix, *PTSS_CMD, *args], capture_output=True, text=True, timeout=60, **kw)
        lines = [l for l in p.stderr.splitlines() if l.startswith("ptss:")]
        check(p.returncode == want, f"{args}: status {p.returncode}, expected {want}: {p.stderr}")
        check(len(lines) == 1 and re.search(pattern, lines[0]), f"{args}: message {p.stderr!r}")
    tgt = T["PTRACE_TARGET"]
    run(["trace"], 2, "no probe")
    run(["trace", "--", tgt, "1"], 2, "no probe given", input="")
    run(["trace", "--format", "xml", "f", "--", "true"], 2, "format")
    run(["trace", "f"], 2, "-p PID or -- COMMAND")
    run(["frobnicate"], 2, "unknown command")
    run(["trace", "no_such_function", "--", tgt, "1"], 3, "no function 'no_such_function'", input="")
    run(["trace", "libc:no_such_function", "--", tgt, "1"], 3, "no_such_function", input="")
    run(["trace", "/nonexistent/lib.so:f", "--", tgt, "1"], 3, "No such file", input="")
    run(["trace", "/etc/passwd:f", "--", tgt, "1"], 3, "not an ELF", input="")
    run(["trace", "refused_syscall_fn", "--", tgt, "1"], 3, "syscall at 0x[0-9a-f]+: cannot run", input="")
    run(["trace", "-p", "2147483646", "f"], 4, "no such process")
    # Permission: an unprivileged user may not trace a root process.
    if os.geteuid() == 0 and subprocess.run(["which", "setpriv"], capture_output=True).returncode == 0:
        victim = subprocess.Popen(["sleep", "30"])
        # A copy of ptss where the unprivileged user can run it (the build tree may be private).
        with tempfile.TemporaryDirectory() as d:
            os.chmod(d, 0o755)
            copy = os.path.join(d, "ptss")
            subprocess.run(["cp", PTSS, copy], check=True)
            try:
                p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                                    copy, "trace", "-p", str(victim.pid), "f"],
                                   capture_output=True, text=True, timeout=60)
                check(p.returncode == 4 and re.search("Operation not permitted.*CAP_SYS_PTRACE", p.stderr)
                      and len(p.stderr.strip().splitlines()) == 1, f"permission: {p.returncode} {p.stderr!r}")
            finally:
                victim.kill()
                victim.wait()
    else:
        print("SKIP: permission case needs root and setpriv")


def versus_uprobes():
    """Counts equal kernel uprobes' (bpftrace) on the same deterministic workload."""
    cmd = [T["WORKLOAD"], "--threads", "3", "--rounds", "50"]
    try:
        bt = subprocess.run(["bpftrace", "-e", f'uprobe:{T["WORKLOAD"]}:work_alpha {{ @n = count(); }}',
                             "-c", " ".join(cmd)], capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        print("SKIP: bpftrace is not installed")
        return
    m = re.search(r"@n: (\d+)", bt.stdout)
    if bt.returncode != 0 or not m:
        print("SKIP: bpftrace cannot run here:", (bt.stderr.strip().splitlines() or ["?"])[-1])
        return
    rc, out, err, rep = trace(["work_alpha"], cmd)
    check(rc == 0, f"exit status {rc}")
    check(hits(rep)["work_alpha"] == int(m.group(1)),
          f"ptss counted {hits(rep)['work_alpha']}, uprobes {m.group(1)}")


SCENARIOS = {
    "workload-exact": workload_exact,
    "fork-untraced-child": fork_untraced_child,
    "fork-followed": fork_followed,
    "exec-followed": exec_followed,
    "insn-classes-pie": lambda: insn_classes(T["INSN"]),
    "insn-classes-nopie": lambda: insn_classes(T["INSN_NOPIE"]),
    "shared-library": shared_library,
    "dlopen-later": dlopen_later,
    "attach-duration": lambda: attach_and_detach("duration"),
    "attach-sigint": lambda: attach_and_detach("sigint"),
    "original-bytes-restored": original_bytes_restored,
    "fallback-without-scratch": fallback_without_scratch,
    "fallback-many-threads": fallback_many_threads,
    "bad-input": bad_input,
    "versus-uprobes": versus_uprobes,
}

if __name__ == "__main__":
    main(SCENARIOS)
