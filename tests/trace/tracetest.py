"""Shared helpers of the `ptss trace` end-to-end tests: running ptss and untraced
programs, reading the targets' own `expect` lines, and the check that ends a scenario.
Each test file defines SCENARIOS and calls main(SCENARIOS); meson lists them with --list.
"""
import json, os, re, signal, subprocess, sys, tempfile, time

PTSS = os.environ.get("PTSS", "ptss")
T = {k: os.environ.get(k, "") for k in ("WORKLOAD", "INSN", "INSN_NOPIE", "LIB_USER", "DLOPEN_USER",
                                "LIBPROBED", "PTRACE_TARGET", "GO_COUNTER", "CHURN", "PARK",
                                "JUMP_TARGET", "CALLS_TARGET", "EXC_TARGET")}
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
    names = [p.split("(")[0].split(":")[-1] for p in probes]
    for fn, n in want.items():
        if any(re.fullmatch(pat.replace("*", ".*"), fn) for pat in names):
            check(got.get(fn, 0) == n, f"{what}: {fn} counted {got.get(fn, 0)}, expected {n}")



def read_mem(pid, addr, n):
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(addr)
        return f.read(n)


def armed(pid, addr):
    """Does ptss's probe sit at ADDR in PID: an int3 (trap probe) or a jmp (jump probe)?"""
    return read_mem(pid, addr, 1) in (b"\xcc", b"\xe9")


def symbol_addr(binary, pid, name):
    """Runtime address of `name` (from nm) in process pid, which maps binary (PIE or not)."""
    nm = subprocess.run(["nm", binary], capture_output=True, text=True, check=True).stdout
    off = int(next(l.split()[0] for l in nm.splitlines() if l.endswith(" " + name)), 16)
    for line in open(f"/proc/{pid}/maps"):
        f = line.split()
        if len(f) >= 6 and f[5] == os.path.realpath(binary) and f[2] == "00000000":
            base = int(f[0].split("-")[0], 16)
            return off if off >= base else base + off
    fail(f"{binary} is not mapped in {pid}")


def wait_until(cond, what, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return
        time.sleep(0.01)
    fail(f"timed out waiting for {what}")


def attach(pid, probes, extra=()):
    """Starts ptss -p; returns (process, report file)."""
    out = tempfile.NamedTemporaryFile("r", suffix=".json")
    tr = subprocess.Popen([*PTSS_CMD, "trace", "-q", "--format", "json", "-o", out.name, *extra,
                           "-p", str(pid), *probes], stderr=subprocess.PIPE, text=True)
    return tr, out


class Target:
    """ptrace_target driven line by line on stdin/stdout, alone or started by ptss."""

    def __init__(self, ptss_args=None):
        self.report = tempfile.NamedTemporaryFile("r", suffix=".json")
        cmd = [T["PTRACE_TARGET"], "2"]
        if ptss_args is not None:
            cmd = [*PTSS_CMD, "trace", "-q", "--format", "json", "-o", self.report.name,
                   *ptss_args, "probe_me", "--", *cmd]
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, bufsize=1)
        self.expect("ready 2")

    def expect(self, want):
        line = self.p.stdout.readline().strip()
        check(line == want, f"target said {line!r}, expected {want!r} (status {self.p.poll()})")

    def say(self, line, *answers):
        self.p.stdin.write(line + "\n")
        for a in answers:
            self.expect(a)

    def finish(self):
        """quit: the target exits 0; returns (ptss's stderr, report) when ptss started it."""
        self.p.stdin.write("quit\n")
        out, err = self.p.communicate(timeout=120)
        check(self.p.returncode == 0, f"status {self.p.returncode}: {err}")
        text = open(self.report.name).read()
        return err, json.loads(text) if text.strip() else None


def attached(tgt):
    """Attaches ptss -p to a Target; returns (ptss process, report file)."""
    tr, out = attach(tgt.p.pid, ["probe_me"])
    addr = symbol_addr(T["PTRACE_TARGET"], tgt.p.pid, "probe_me")
    wait_until(lambda: armed(tgt.p.pid, addr) or tr.poll() is not None, "ptss to arm")
    if tr.poll() is not None:
        fail(f"ptss ended early: {tr.stderr.read()}")
    return tr, out


def detach(tr, out):
    tr.send_signal(signal.SIGINT)
    err = tr.communicate(timeout=60)[1]
    check(tr.returncode == 0, f"ptss exit status {tr.returncode}: {err}")
    rep = json.loads(open(out.name).read())
    out.close()
    return err, rep


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
