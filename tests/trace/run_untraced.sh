#!/usr/bin/env bash
# Runs every tracer test target untraced: each must exit 0, print its expected-count lines
# on stderr, and print the same stdout on every run (what traced runs are compared with).
#   usage: run_untraced.sh WORKLOAD INSN_TARGET INSN_TARGET_NOPIE LIB_USER DLOPEN_USER LIBPROBED
set -u
workload=$1 insn=$2 insn_nopie=$3 lib_user=$4 dlopen_user=$5 libprobed=$6
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failed=0

fail() {
	echo "FAIL: $*"
	failed=1
}

# run NAME CMD...: runs CMD, stdout to $tmp/NAME.out, stderr to $tmp/NAME.err; exit 0?
run() {
	local name=$1
	shift
	"$@" >"$tmp/$name.out" 2>"$tmp/$name.err" </dev/null
	local rc=$?
	if [ $rc -ne 0 ]; then
		fail "$name: exit $rc: $*"
		sed 's/^/  /' "$tmp/$name.err"
	fi
}

# expect NAME REGEX [COUNT]: COUNT (default 1) lines of NAME's stderr match REGEX.
expect() {
	local n
	n=$(grep -cE "$2" "$tmp/$1.err")
	[ "$n" -eq "${3:-1}" ] || fail "$1: $n lines match '$2', want ${3:-1}"
}

# same A B: the two runs printed identical stdout.
same() {
	cmp -s "$tmp/$1.out" "$tmp/$2.out" || fail "stdout of $1 and $2 differ"
}

P='pid=[0-9]+'
# Defaults: 4 threads, 3 waves, 100 rounds. alpha = 3 * 100 * (1+2+3+4), beta = 3 * 4 * 100.
run wl "$workload"
expect wl "^workload: expect $P image=main work_alpha=3000 work_beta=1200 work_gamma=0 on_signal_work=0\$"
expect wl "^workload: thread $P tid=[0-9]+ wave=[0-2] index=[0-3] " 12
run wl2 "$workload"
same wl wl2

# Thread i receives 1 + i%3 signals: 3 * (1+2+3+1) = 21.
run sig "$workload" --signals
expect sig "^workload: expect $P image=main work_alpha=3000 work_beta=1200 work_gamma=21 on_signal_work=21\$"
expect sig "^workload: thread $P tid=[0-9]+ wave=2 index=2 work_alpha=300 work_beta=100 work_gamma=3 on_signal_work=3\$"

run fork "$workload" --fork
expect fork "^workload: expect $P image=fork work_alpha=0 work_beta=0 work_gamma=7 on_signal_work=0\$"
expect fork "^workload: expect $P image=main "
main_pid=$(sed -nE 's/^workload: expect pid=([0-9]+) image=main .*/\1/p' "$tmp/fork.err")
fork_pid=$(sed -nE 's/^workload: expect pid=([0-9]+) image=fork .*/\1/p' "$tmp/fork.err")
[ -n "$main_pid" ] && [ "$main_pid" != "$fork_pid" ] || fail "fork: child pid = parent pid"

run exec "$workload" --exec
expect exec "^workload: expect $P image=phase2 work_alpha=0 work_beta=0 work_gamma=5 on_signal_work=0\$"
[ "$(grep -oE "^workload: expect $P" "$tmp/exec.err" | sort -u | wc -l)" -eq 1 ] ||
	fail "exec: phase2 has another pid than main"

# Everything at once, twice: 3 threads, 2 waves, 50 rounds. alpha = 2*50*6, signals 2*(1+2+3).
all=(--threads 3 --waves 2 --rounds 50 --signals --fork --exec)
run all "$workload" "${all[@]}"
expect all "^workload: expect $P image=main work_alpha=600 work_beta=300 work_gamma=12 on_signal_work=12\$"
expect all "^workload: expect $P image=(fork|phase2) " 2
[ "$(wc -l <"$tmp/all.out")" -eq 3 ] || fail "all: want 3 stdout lines (fork, main, phase2)"
run all2 "$workload" "${all[@]}"
same all all2

run quiet "$workload" --quiet --signals --fork --exec
[ -s "$tmp/quiet.err" ] && fail "quiet: printed on stderr"

# insn_target: every function 3 times; PIE and non-PIE compute the same.
run insn "$insn"
run insn_nopie "$insn_nopie"
for name in insn insn_nopie; do
	expect $name "^insn_target: expect $P( insn_[a-z0-9_]+=3)+\$"
	[ "$(wc -l <"$tmp/$name.out")" -eq 25 ] || fail "$name: want 25 stdout lines"
done
same insn insn_nopie
run insn5 "$insn" --rounds 5
expect insn5 "^insn_target: expect $P( insn_[a-z0-9_]+=5)+\$"

# Both call probed_lib_fn(0..9): the same checksum.
run lib "$lib_user"
expect lib "^lib_user: expect $P probed_lib_fn=10\$"
run dl "$dlopen_user" "$libprobed" --delay-ms 0
expect dl "^dlopen_user: expect $P probed_lib_fn=10\$"
run dl_stdin "$dlopen_user" "$libprobed" --wait-stdin --calls 3
expect dl_stdin "^dlopen_user: expect $P probed_lib_fn=3\$"
[ "$(sed 's/^[a-z_]*://' "$tmp/lib.out")" = "$(sed 's/^[a-z_]*://' "$tmp/dl.out")" ] ||
	fail "lib_user and dlopen_user checksums differ"

[ $failed -eq 0 ] && echo "all targets ran untraced as expected"
exit $failed
