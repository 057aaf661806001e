#!/usr/bin/env python3
"""End-to-end tests of the errors of `ptss trace` that used to be silent (issue 9, defect 5):
a probe that can never fire (unknown library, a static program's libc, the vDSO), no probe
given, a report that cannot be written, and an attached process killed while traced. Each
error is one line on stderr starting 'ptss:' and its documented exit status (ptss(1)).

usage: test_cli_errors.py SCENARIO     (paths of the programs come from the environment)
"""
import json, os, re, signal, subprocess, sys, tempfile, time

from tracetest import *  # noqa: F401,F403

STATIC_USER = os.environ.get("STATIC_USER", "")


def run(args, timeout=60, **kw):
    """ptss ARGS...: (status, stdout, stderr, the lines of stderr starting 'ptss:')."""
    p = subprocess.run([*PTSS_CMD, *args], capture_output=True, text=True, timeout=timeout, **kw)
    return p.returncode, p.stdout, p.stderr, [l for l in p.stderr.splitlines() if l.startswith("ptss:")]


def one_error(what, got, want_status, pattern):
    """The run ended with status WANT_STATUS and exactly one 'ptss:' line, matching PATTERN."""
    rc, out, err, lines = got
    check(rc == want_status, f"{what}: status {rc}, expected {want_status}: {err[-2000:]!r}")
    check(len(lines) == 1 and re.search(pattern, lines[0]),
          f"{what}: expected one 'ptss:' line matching {pattern!r}, got {lines!r}")


def ran(err, name):
    """Did the started target run to its end (it prints its expect line last)?"""
    return re.search(rf"^{name}: expect pid=\d+ ", err, re.M) is not None


def start_target(workers="1"):
    tgt = subprocess.Popen(WRAP + [T["PTRACE_TARGET"], workers], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, bufsize=1)
    check(tgt.stdout.readline().startswith("ready"), "target did not start")
    return tgt


def probe_addr(pid, fn):
    """Runtime address of FN in ptrace_target process PID (PIE: bias from its maps)."""
    nm = subprocess.run(["nm", T["PTRACE_TARGET"]], capture_output=True, text=True).stdout
    off = int(next(l.split()[0] for l in nm.splitlines() if l.endswith(" " + fn)), 16)
    base = next(int(l.split("-")[0], 16) for l in open(f"/proc/{pid}/maps")
                if T["PTRACE_TARGET"] in l and l.split()[2] == "00000000")
    return base + off


def wait_armed(pid, addr, tracer, timeout=30):
    """Waits until ptss (process TRACER) has planted its probe at ADDR in PID."""
    end = time.time() + timeout
    while time.time() < end:
        if tracer.poll() is not None:
            fail(f"ptss exited early ({tracer.returncode}): {tracer.stderr.read()!r}")
        if armed(pid, addr):
            time.sleep(0.2)  # the probe is written last in setup: let it resume the threads
            return
        time.sleep(0.05)
    fail("ptss did not arm the probe in time")


def attach(tgt, args):
    """ptss trace ARGS -p PID probe_me in the background, once armed: (Popen, report file)."""
    out = tempfile.NamedTemporaryFile("r", suffix=".json")
    tr = subprocess.Popen([*PTSS_CMD, "trace", "--format", "json", "-o", out.name, *args,
                           "-p", str(tgt.pid), "probe_me"], stderr=subprocess.PIPE, text=True)
    return tr, out


def target_alive_and_well(tgt):
    tgt.stdin.write("call\nwake 8\nquit\n")
    rest = tgt.communicate(timeout=30)[0]
    check(rest.strip() == "call 42" and tgt.returncode == 0, f"target harmed: {rest!r} {tgt.returncode}")


# ---- scenarios ----

def unknown_module():
    """A short module name that matches nothing: a warning that it may still be loaded with
    dlopen, then, never loaded, an error at the end and status 3 (started and attached)."""
    cmd = [T["LIB_USER"], "--calls", "5"]
    base = untraced(cmd)
    # -q: only the error, at the end; the command ran to its end all the same.
    got = run(["trace", "-q", "nosuchlib:foo", "--", *cmd])
    one_error("started, -q", got, 3, r"^ptss: probe nosuchlib:foo was never armed: .*'nosuchlib'")
    check(ran(got[2], "lib_user") and got[1] == base.stdout, "the command did not run as untraced")
    # Without -q: the warning as soon as the libraries ld.so loads are known, then the error.
    rc, out, err, lines = run(["trace", "nosuchlib:foo", "libprobed:probed_lib_fn", "--", *cmd])
    check(rc == 3, f"started: status {rc}, expected 3: {err!r}")
    check(len(lines) == 2 and re.search(r"nosuchlib.*dlopen", lines[0])
          and re.search(r"never armed", lines[1]), f"started: messages {lines!r}")
    check(re.search(r"libprobed.so:probed_lib_fn +5 ", err), "the other probe was not counted")
    # A path that is never loaded, and a glob: the same.
    got = run(["trace", "-q", f"{T['LIBPROBED']}:probed_lib_fn", "--", T["INSN"]])
    one_error("path", got, 3, r"never armed: .*libprobed\.so was never loaded")
    got = run(["trace", "-q", "nosuchlib:foo*", "--", T["INSN"]])
    one_error("glob", got, 3, r"^ptss: probe nosuchlib:foo\* was never armed")
    # Attached: a warning when attaching, the error when detaching; the target unharmed.
    tgt = start_target()
    try:
        got = run(["trace", "-q", "--duration", "1", "-p", str(tgt.pid), "nosuchlib:foo"])
        one_error("attached", got, 3, r"^ptss: probe nosuchlib:foo was never armed")
        got = run(["trace", "--duration", "1", "-p", str(tgt.pid), "nosuchlib:foo", "probe_me"])
        check(got[0] == 3 and len(got[3]) == 2 and "dlopen" in got[3][0], f"attached: {got[3]!r}")
    finally:
        target_alive_and_well(tgt)


def static_libc():
    """A static program has no libc module (nor any library): said up front, status 3, and
    the program does not run; its own copy of a libc function is probed without a module."""
    if not STATIC_USER:
        print("SKIP: no static target (cannot link with -static here)")
        return
    cmd = [STATIC_USER, "--calls", "7"]
    got = run(["trace", "libc:malloc", "--", *cmd])
    one_error("libc:malloc", got, 3, r"^ptss: probe libc:malloc: .*statically linked.*'libc'.*'malloc'")
    check(not ran(got[2], "static_user") and got[1] == "", "the program ran")
    got = run(["trace", f"{T['LIBPROBED']}:probed_lib_fn", "--", *cmd])
    one_error("path", got, 3, r"statically linked: it loads no library")
    check(not ran(got[2], "static_user"), "the program ran")
    # The control: its own functions are counted exactly.
    rc, out, err, rep = trace(["static_work"], cmd)
    check(rc == 0, f"static_work: status {rc}: {err!r}")
    compare_counts(rep, expected(err), "static program", ["static_work"])
    check(out == untraced(cmd).stdout, "stdout differs from an untraced run")


def vdso():
    """The vDSO (no file, the kernel's code) is refused before anything runs: status 3."""
    for probe in ["vdso:clock_gettime", "linux-vdso.so.1:__vdso_clock_gettime", "linux-vdso:time"]:
        got = run(["trace", probe, "--", T["LIB_USER"]])
        one_error(probe, got, 3, r"^ptss: probe .*: the vDSO cannot be probed")
        check(got[1] == "" and not ran(got[2], "lib_user"), f"{probe}: the command ran")
    tgt = start_target()
    try:
        got = run(["trace", "-p", str(tgt.pid), "probe_me", "vdso:gettimeofday"])
        one_error("attach", got, 3, r"the vDSO cannot be probed")
    finally:
        target_alive_and_well(tgt)


def no_probe():
    """A command without any probe: a usage error that says so (status 2), nothing run."""
    got = run(["trace", "--", T["LIB_USER"]])
    one_error("-- COMMAND", got, 2, r"^ptss: no probe given")
    check(got[1] == "" and not ran(got[2], "lib_user"), "the command ran")
    one_error("-f -- COMMAND", run(["trace", "-f", "--", T["LIB_USER"]]), 2, r"^ptss: no probe given")
    one_error("-p PID", run(["trace", "-p", "1"]), 2, r"^ptss: no probe given")
    one_error("nothing", run(["trace"]), 2, r"^ptss: no probe given")
    # An option argument "--" is no end of the options.
    with tempfile.TemporaryDirectory() as d:
        got = run(["trace", "-q", "-o", "--", "main", "--", T["LIB_USER"]], cwd=d)
        check(got[0] == 0 and ran(got[2], "lib_user"), f"-o --: status {got[0]}: {got[2]!r}")
        check(os.path.exists(os.path.join(d, "--")), "-o -- did not name the report file")


def report_lost():
    """A report that cannot be written entirely: one line and status 5 (started, attached)."""
    if not os.path.exists("/dev/full"):
        print("SKIP: no /dev/full")
        return
    cmd = [T["LIB_USER"], "--calls", "3"]
    for fmt in ["table", "json"]:
        got = run(["trace", "-q", "--format", fmt, "-o", "/dev/full", "libprobed:probed_lib_fn", "--", *cmd])
        one_error(fmt, got, 5, r"^ptss: cannot write the report to /dev/full: No space left")
        check(ran(got[2], "lib_user"), "the command did not run to its end")
    tgt = start_target()
    try:
        got = run(["trace", "-q", "--duration", "1", "-o", "/dev/full", "-p", str(tgt.pid), "probe_me"])
        one_error("attached", got, 5, r"^ptss: cannot write the report to /dev/full")
        check(not armed(tgt.pid, probe_addr(tgt.pid, "probe_me")), "probe left behind")
    finally:
        target_alive_and_well(tgt)


def target_killed():
    """An attached process killed while traced: the report up to its death, one line naming
    the signal, status 6. A started command killed: its own status, 128 + the signal."""
    for sig in [signal.SIGKILL, signal.SIGTERM]:
        tgt = start_target("3")
        tr, out = attach(tgt, ["-q"])
        with out:
            wait_armed(tgt.pid, probe_addr(tgt.pid, "probe_me"), tr)
            for _ in range(3):
                tgt.stdin.write("call\n")
                check(tgt.stdout.readline().strip() == "call 42", "wrong result while traced")
            tgt.send_signal(sig)
            tgt.wait(timeout=30)
            err = tr.communicate(timeout=30)[1]
            lines = [l for l in err.splitlines() if l.startswith("ptss:")]
            name = signal.Signals(sig).name
            check(tr.returncode == 6, f"{name}: ptss status {tr.returncode}, expected 6: {err!r}")
            check(len(lines) == 1 and re.fullmatch(rf"ptss: process {tgt.pid} was killed by {name}.*", lines[0]),
                  f"{name}: messages {lines!r}")
            rep = json.loads(open(out.name).read())
            check(rep["probes"][0]["hits"] == 3, f"{name}: counted {rep['probes'][0]['hits']}, made 3")
    # Exiting on its own while attached is no error: status 0.
    tgt = start_target()
    tr, out = attach(tgt, ["-q"])
    with out:
        wait_armed(tgt.pid, probe_addr(tgt.pid, "probe_me"), tr)
        tgt.stdin.write("call\nwake 1\nquit\n")
        tgt.communicate(timeout=30)
        err = tr.communicate(timeout=30)[1]
        check(tr.returncode == 0 and "ptss:" not in err, f"clean exit: status {tr.returncode}: {err!r}")
        check(json.loads(open(out.name).read())["probes"][0]["hits"] == 1, "clean exit: wrong count")
    # Started: the command's own status; with -q nothing of ptss on its stderr.
    tr = subprocess.Popen([*PTSS_CMD, "trace", "-q", "probe_me", "--", T["PTRACE_TARGET"], "2"],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, bufsize=1)
    check(tr.stdout.readline().startswith("ready"), "started target did not start")
    child = int(open(f"/proc/{tr.pid}/task/{tr.pid}/children").read().split()[0])
    os.kill(child, signal.SIGKILL)
    out, err = tr.communicate(timeout=30)
    check(tr.returncode == 128 + signal.SIGKILL, f"started: status {tr.returncode}: {err!r}")
    check(not [l for l in err.splitlines() if l.startswith("ptss:")], f"started, -q: {err!r}")


SCENARIOS = {
    "defect5-unknown-module": unknown_module,
    "defect5-static-libc": static_libc,
    "defect5-vdso": vdso,
    "defect5-no-probe": no_probe,
    "defect5-report-lost": report_lost,
    "defect5-target-killed": target_killed,
}

if __name__ == "__main__":
    main(SCENARIOS)
