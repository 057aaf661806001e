"""Shared helpers of the `ptss trace` end-to-end tests: running ptss and untraced
programs, reading the targets' own `expect` lines, and the check that ends a scenario.
Each test file defines SCENARIOS and calls main(SCENARIOS); meson lists them with --list.
"""
import json, os, re, signal, subprocess, sys, tempfile, time

PTSS = os.environ.get("PTSS", "ptss")
T = {k: os.environ.get(k, "") for k in ("WORKLOAD", "INSN", "INSN_NOPIE", "LIB_USER", "DLOPEN_USER",
                                "LIBPROBED", "PTRACE_TARGET", "GO_COUNTER", "CHURN", "PARK")}
EXPECT = re.compile(r"^(\S+): expect pid=(\d+)(?: image=(\w+))?((?: \w+=\d+)+)$")
THREAD = re.compile(r"^workload: thread pid=\d+ tid=(\d+) .*?((?: \w+=\d+)+)$")


def fail(why):
    print("FAIL:", why)
    sys.exit(1)


def check(cond, why):
    if not cond:
        fail(why)


def expected(stderr, images=None):
    """Sums the targets' own `expect` lines (optionally only some images)."""
    total = {}
    for line in stderr.splitlines():
        m = EXPECT.match(line)
        if m and (images is None or (m.group(3) or "main") in images):
            for kv in m.group(4).split():
                k, v = kv.split("=")
                total[k] = total.get(k, 0) + int(v)
    return total


# Under ASan, a traced target's LeakSanitizer cannot stop its threads (ptss traces them),
# so leak checks are off for targets and ptss alike here; ptss's leaks are checked by
# running it under valgrind (PTSS_WRAPPER, set by scripts/test).
if os.environ.get("PTSS_SANITIZED"):
    os.environ["ASAN_OPTIONS"] = os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0"  # last wins
WRAP = []
PTSS_CMD = os.environ.get("PTSS_WRAPPER", "").split() + [PTSS]


def trace(probes, command, extra=(), stdin=None, timeout=120):
    """Runs ptss trace with a JSON report; returns (rc, stdout, stderr, report)."""
    command = WRAP + list(command)
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        p = subprocess.run([*PTSS_CMD, "trace", "-q", "--format", "json", "-o", out.name, *extra,
                            *probes, "--", *command], input=stdin, capture_output=True,
                           text=True, timeout=timeout)
        text = open(out.name).read()
    return p.returncode, p.stdout, p.stderr, json.loads(text) if text.strip() else None


def hits(report):
    return {p["probe"].split(":", 1)[1]: p["hits"] for p in report["probes"]}


def untraced(command, stdin=None):
    return subprocess.run(WRAP + list(command), input=stdin, capture_output=True, text=True, timeout=60)


def compare_counts(report, want, what, probes):
    """Every probed function's count equals what the target says it did."""
    got = hits(report)
    names = [p.split(":")[-1] for p in probes]
    for fn, n in want.items():
        if any(re.fullmatch(pat.replace("*", ".*"), fn) for pat in names):
            check(got.get(fn, 0) == n, f"{what}: {fn} counted {got.get(fn, 0)}, expected {n}")



def read_mem(pid, addr, n):
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(addr)
        return f.read(n)


def main(scenarios):
    """Runs the scenario named by argv[1]; --list prints the names (for meson)."""
    if len(sys.argv) == 2 and sys.argv[1] == "--list":
        print("\n".join(scenarios))
        return
    if len(sys.argv) != 2 or sys.argv[1] not in scenarios:
        print("usage: " + os.path.basename(sys.argv[0]) + " {" + "|".join(scenarios) + "|--list}")
        sys.exit(2)
    scenarios[sys.argv[1]]()
    print("ok")
