#!/bin/bash
# tests/pid1/run.sh: the PID-1 suite of civis-agent.
#
#   tests/pid1/run.sh [AGENT]            AGENT defaults to build/civis-agent
#
# Every scenario runs twice: with the agent as PID 1 of a new PID namespace
# (unshare --pid --fork --mount-proc, needs root or user namespaces) and as a
# plain process (where it must be a child subreaper). Exit codes and messages
# are asserted exactly. Waits are bounded polls on files the helpers write,
# never sleeps standing in for synchronisation.
#
# Environment:
#   RUNNER (or VALGRIND)  a prefix for the agent, e.g.
#                         "valgrind --error-exitcode=1 --leak-check=full"; with
#                         valgrind the logs go to files that are checked at the
#                         end (scenario 12) and the slow loops are sampled
#   AGENT_ARGS            extra agent options put before the command
#   MODES                 "pid1 plain" (default), or one of them
#   CC                    compiler for the helpers (cc)
#   TEE_MB                size of each stream of the byte-exact tee test (50)
#   ONLY                  scenario numbers to run, e.g. "15 16" (default: all)
#
# Documented behaviour under test (agent/supervise.h): signals go to the
# command's process group (--signal-child-only: the command alone); when the
# command exits while processes it started still run (in its group or not:
# setsid), they get SIGTERM at once (stopped ones SIGCONT too) and SIGKILL
# after --grace-period; the agent's exit code stays the command's. Without
# the API these run with the command on the agent's own stdout and stderr
# (no pipes; scenario 17 checks that, and the same with the pipes kept by
# an existing termination log).
set -u

here=$(cd "$(dirname "$0")" && pwd)
AGENT=${1:-build/civis-agent}
case $AGENT in /*) ;; *) AGENT=$PWD/$AGENT ;; esac
RUNNER=${RUNNER:-${VALGRIND:-}}
MODES=${MODES:-pid1 plain}
ONLY=${ONLY:-}
TEE_MB=${TEE_MB:-50}
read -r -a AGENT_ARGS_A <<< "${AGENT_ARGS:-}"

if [ ! -x "$AGENT" ]; then
	echo "run.sh: agent '$AGENT' not found or not executable" >&2
	exit 2
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/civis-pid1.XXXXXX") || exit 2
BG=
cleanup() {
	[ -n "$BG" ] && kill_tree "$BG"
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
cd "$WORK" || exit 2
ulimit -c 0                  # SIGQUIT and friends must not leave cores around
exec </dev/null              # never hand our terminal to a test command

H=$WORK/pid1h
if ! ${CC:-cc} -std=c11 -O2 -D_GNU_SOURCE -Wall -Wextra -Werror \
	"$here/helpers/pid1h.c" -o "$H"; then
	echo "run.sh: cannot build the helpers" >&2
	exit 2
fi

VG=0
VGLOG=0
RUNS=0
read -r -a RUNNER_A <<< "$RUNNER"
if [[ $RUNNER == *valgrind* ]]; then
	VG=1
	mkdir -p "$WORK/vg"
	# One log per run and process (as PID 1 every agent is pid 1).
	[[ $RUNNER == *--log-file* ]] || VGLOG=1
fi
if [ "$VG" = 1 ]; then TMO=900; SLOW=10; else TMO=120; SLOW=1; fi

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   - $*"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $*"; }
check() {    # check NAME CONDITION-STATUS DETAIL
	if [ "$2" = 0 ]; then pass "$1"; else fail "$1${3:+: $3}"; fi
}

now() { echo "${EPOCHREALTIME/,/.}"; }
elapsed_since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }
# fcmp A OP B on decimals
fcmp() { awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
	if (op == "<") exit !(a < b); if (op == ">=") exit !(a >= b); exit 2 }'; }

# The command line that runs the agent in MODE; LAUNCH holds options of
# "pid1h launch" (the signal state the agent is started with).
LAUNCH=()
agent_cmd() {
	local pre=() vg=()
	[ "$MODE" = pid1 ] && pre=(unshare --pid --fork --mount-proc)
	RUNS=$((RUNS + 1))
	[ "$VGLOG" = 1 ] && vg=("--log-file=$WORK/vg/$MODE.$RUNS.%p.log")
	CMD=(timeout -k 10 "$TMO" "${pre[@]}" "$H" launch "${LAUNCH[@]}" --
	     "${RUNNER_A[@]}" "${vg[@]}" "$AGENT" "${AGENT_ARGS_A[@]}" "$@")
}

# run_fg DIR AGENT-ARGS...: run to completion; RC, DIR/out, DIR/err.
run_fg() {
	local d=$1; shift
	agent_cmd "$@"
	"${CMD[@]}" >"$d/out" 2>"$d/err"
	RC=$?
}

# run_bg DIR AGENT-ARGS...: start it; BG is the pid to wait for.
run_bg() {
	local d=$1; shift
	agent_cmd "$@"
	"${CMD[@]}" >"$d/out" 2>"$d/err" &
	BG=$!
}

# The agent's pid as seen from here: timeout -> [unshare ->] agent.
agent_pid() {
	local p=$BG depth=1 i c
	[ "$MODE" = pid1 ] && depth=2
	while [ "$depth" -gt 0 ]; do
		c=
		for ((i = 0; i < 1000; i++)); do
			read -r c _ 2>/dev/null < "/proc/$p/task/$p/children"
			[ -n "$c" ] && break
			sleep 0.01
		done
		[ -n "$c" ] || { echo 0; return; }
		p=$c
		depth=$((depth - 1))
	done
	echo "$p"
}

waitfile() { "$H" waitfile "$1" "$((30 * SLOW))"; }

# Wait for BG, at most 30 s (x10 under valgrind): a broken agent fails
# the scenario, not the whole suite. RC is its status (137 when we killed).
finish_bg() {
	local i st
	for ((i = 0; i < 3000 * SLOW; i++)); do
		read -r _ _ st _ 2>/dev/null < "/proc/$BG/stat" || break
		[ "$st" = Z ] && break
		sleep 0.01
	done
	[ "$i" -lt $((3000 * SLOW)) ] || kill_tree "$BG"
	wait "$BG"
	RC=$?
	BG=
}
# KILL a background run and everything under it (it is ours).
kill_tree() {
	local p=$1 c
	for c in $(cat "/proc/$p/task/$p/children" 2>/dev/null); do kill_tree "$c"; done
	kill -KILL "$p" 2>/dev/null
}

signum() { kill -l "$1"; }

# 0 if pid runs (exists and is not a zombie; comm has no spaces here).
proc_alive() {
	local st
	read -r _ _ st _ 2>/dev/null < "/proc/$1/stat" || return 1
	[ "$st" != Z ]
}

# ------------------------------------------------------------------ 1
s1_exit_codes() {
	local d=$1 c bad= codes sig n
	if [ "$VG" = 1 ]; then codes="0 1 2 3 42 100 125 126 127 128 129 200 254 255"
	else codes=$(seq 0 255); fi
	for c in $codes; do
		run_fg "$d" -- sh -c "exit $c"
		[ "$RC" = "$c" ] || bad="$bad $c->$RC"
	done
	check "1 [$MODE] exit codes pass through" "$([ -z "$bad" ]; echo $?)" "$bad"
	for sig in TERM HUP QUIT KILL; do
		n=$(signum "$sig")
		run_fg "$d" -- sh -c "kill -$sig \$\$"
		check "1 [$MODE] command killed by SIG$sig exits $((128 + n))" \
			"$([ "$RC" = $((128 + n)) ]; echo $?)" "got $RC"
	done
}

# ------------------------------------------------------------------ 2
# expect_msg NAME WANT-RC WANT-LINE
expect_fail() {
	local d=$1 name=$2 rc=$3 line=$4
	local ok=0
	[ "$RC" = "$rc" ] || ok=1
	grep -qFx -- "$line" "$d/err" || ok=1
	[ -s "$d/out" ] && ok=1
	check "$name" "$ok" "exit $RC, stderr: $(head -c 300 "$d/err" | tr '\n' '|')"
}
s2_exec_failure() {
	local d=$1
	run_fg "$d" -- civis-no-such-command-xyz arg
	expect_fail "$d" "2 [$MODE] missing command: 127 + message" 127 \
		"civis-agent: cannot run 'civis-no-such-command-xyz': No such file or directory"
	mkdir -p "$d/adir"
	run_fg "$d" -- "$d/adir"
	expect_fail "$d" "2 [$MODE] directory: 126 + message" 126 \
		"civis-agent: cannot run '$d/adir': Is a directory"
	printf '#!/bin/sh\nexit 0\n' > "$d/noexec"
	chmod 644 "$d/noexec"
	run_fg "$d" -- "$d/noexec"
	expect_fail "$d" "2 [$MODE] not executable: 126 + message" 126 \
		"civis-agent: cannot run '$d/noexec': Permission denied"
}

# ------------------------------------------------------------------ 3, 4
s3_zombies() {
	local d=$1 want="adopted 100 of 100, not adopted 0, left 0 (zombies 0)"
	run_fg "$d" -- "$H" reap 100
	check "3 [$MODE] 100 orphaned grandchildren reaped, no zombie left" \
		"$([ "$RC" = 0 ] && grep -qFx "$want" "$d/out"; echo $?)" \
		"exit $RC: $(cat "$d/out")"
	if [ "$MODE" = plain ]; then
		check "4 [$MODE] not PID 1: orphans adopted by the agent (subreaper)" \
			"$(grep -q '^adopted 100 of 100' "$d/out"; echo $?)" "$(cat "$d/out")"
	fi
}

# ------------------------------------------------------------------ 5
s5_signals_kill() {
	local d=$1 sig n a
	for sig in TERM INT HUP USR1 USR2; do
		rm -f "$d/ready"
		run_bg "$d" -- "$H" waitsig "$d/ready"
		if ! waitfile "$d/ready"; then
			kill_tree "$BG"; finish_bg
			fail "5 [$MODE] SIG$sig: command never got ready"; continue
		fi
		a=$(agent_pid)
		n=$(signum "$sig")
		kill "-$sig" "$a"
		finish_bg
		check "5 [$MODE] SIG$sig to the agent kills the command: exit $((128 + n))" \
			"$([ "$RC" = $((128 + n)) ]; echo $?)" "got $RC"
	done
}

# ------------------------------------------------------------------ 6
s6_all_signals() {
	local d=$1 a sig i sent=() missing= want got
	local sigs
	sigs=$(seq 1 31 | grep -vxE '9|17|19')
	# Real-time signals too.
	sigs="$sigs 34 35 40 50 63"
	[ "$VG" = 1 ] || sigs="$sigs 64"    # valgrind keeps SIGRTMAX for itself
	# Under valgrind a kill(2) of SIGILL, SIGTRAP, SIGBUS, SIGFPE, SIGSEGV
	# or SIGSYS is fatal whatever the mask (valgrind 3.19 takes them for
	# faults of its own; "the 'impossible' happened"), so they are left out
	# there; the plain and SAN=1 runs cover them.
	[ "$VG" = 1 ] && sigs=$(echo $sigs | tr ' ' '\n' | grep -vxE '4|5|7|8|11|31')
	mkdir -p "$d/c"; rm -f "$d/c/"*
	run_bg "$d" -- "$H" counter "$d/c"
	if ! waitfile "$d/c/ready"; then
		kill_tree "$BG"; finish_bg
		fail "6 [$MODE] counter never got ready"; return
	fi
	a=$(agent_pid)
	for sig in $sigs; do
		kill "-$sig" "$a"
		sent+=("$sig")
		# Bounded poll: until the counter has seen it.
		for ((i = 0; i < 500 * SLOW; i++)); do
			grep -q "^$sig " "$d/c/counts" 2>/dev/null && break
			sleep 0.01
		done
		grep -q "^$sig " "$d/c/counts" || missing="$missing $sig"
	done
	: > "$d/c/stop"
	finish_bg
	want=$(for sig in "${sent[@]}"; do echo "$sig 1"; done | sort -n)
	got=$(sort -n "$d/c/counts")
	check "6 [$MODE] signals 1-31 but KILL/STOP/CHLD, and real-time ones, reach the command exactly once" \
		"$([ "$RC" = 0 ] && [ -z "$missing" ] && [ "$want" = "$got" ]; echo $?)" \
		"exit $RC, missing:${missing:- none}, counts: $(echo "$got" | tr '\n' ' ')"
}

# ------------------------------------------------------------------ 7
s7_group() {
	local d=$1 a
	# The brief's case: the command (a shell) ignores USR1, its child does not.
	rm -f "$d/gc.out" "$d/gc.ready" "$d/c.ready"
	run_bg "$d" -- sh -c '"$1" catch 10,15 "$2/gc.out" "$2/gc.ready" &
		trap "" USR1; : > "$2/c.ready"; wait; exit 5' sh "$H" "$d"
	if waitfile "$d/gc.ready" && waitfile "$d/c.ready"; then
		a=$(agent_pid); kill -USR1 "$a"; finish_bg
		check "7 [$MODE] group signal: the shell ignoring USR1 survives (exit 5), its child gets USR1" \
			"$([ "$RC" = 5 ] && [ "$(cat "$d/gc.out" 2>/dev/null)" = 10 ]; echo $?)" \
			"exit $RC, child got: $(cat "$d/gc.out" 2>/dev/null)"
	else
		kill_tree "$BG"; finish_bg; fail "7 [$MODE] never got ready"
	fi
	# Both catch it: the command and its child each get it once.
	rm -f "$d/gc.out" "$d/gc.ready" "$d/c.out" "$d/c.ready"
	run_bg "$d" -- sh -c '"$1" catch 10,15 "$2/gc.out" "$2/gc.ready" &
		exec "$1" catch 10 "$2/c.out" "$2/c.ready"' sh "$H" "$d"
	if waitfile "$d/gc.ready" && waitfile "$d/c.ready"; then
		a=$(agent_pid); kill -USR1 "$a"; finish_bg
		check "7 [$MODE] group signal reaches the command and its child" \
			"$([ "$RC" = 0 ] && [ "$(cat "$d/c.out" 2>/dev/null)" = 10 ] &&
			   [ "$(cat "$d/gc.out" 2>/dev/null)" = 10 ]; echo $?)" \
			"exit $RC, command got: $(cat "$d/c.out" 2>/dev/null), child got: $(cat "$d/gc.out" 2>/dev/null)"
	else
		kill_tree "$BG"; finish_bg; fail "7 [$MODE] never got ready"
	fi
	# --signal-child-only: only the command gets USR1; its child then gets
	# the SIGTERM sent to the group when the command exits.
	rm -f "$d/gc.out" "$d/gc.ready" "$d/c.out" "$d/c.ready"
	run_bg "$d" --signal-child-only -- sh -c '"$1" catch 10,15 "$2/gc.out" "$2/gc.ready" &
		exec "$1" catch 10 "$2/c.out" "$2/c.ready"' sh "$H" "$d"
	if waitfile "$d/gc.ready" && waitfile "$d/c.ready"; then
		a=$(agent_pid); kill -USR1 "$a"; finish_bg
		check "7 [$MODE] --signal-child-only: USR1 to the command only, TERM to the group after it exits" \
			"$([ "$RC" = 0 ] && [ "$(cat "$d/c.out" 2>/dev/null)" = 10 ] &&
			   [ "$(cat "$d/gc.out" 2>/dev/null)" = 15 ]; echo $?)" \
			"exit $RC, command got: $(cat "$d/c.out" 2>/dev/null), child got: $(cat "$d/gc.out" 2>/dev/null)"
	else
		kill_tree "$BG"; finish_bg; fail "7 [$MODE] never got ready"
	fi
}

# ------------------------------------------------------------------ 8
s8_orphaned_group() {
	local d=$1 t0 el gcpid
	# A grandchild that dies of SIGTERM: gone at once, long before the grace.
	rm -f "$d/gc.out" "$d/gc.ready"
	t0=$(now)
	run_fg "$d" --grace-period 30s -- sh -c '"$1" catch 15 "$2/gc.out" "$2/gc.ready" &
		"$1" waitfile "$2/gc.ready" 60 || exit 90; exit 3' sh "$H" "$d"
	el=$(elapsed_since "$t0")
	check "8 [$MODE] command exits, grandchild gets SIGTERM at once; exit 3 in ${el}s" \
		"$([ "$RC" = 3 ] && [ "$(cat "$d/gc.out" 2>/dev/null)" = 15 ] &&
		   fcmp "$el" "<" $((15 * SLOW)); echo $?)" \
		"exit $RC, grandchild got: $(cat "$d/gc.out" 2>/dev/null)"
	# A grandchild that survives SIGTERM: SIGKILL after the grace period.
	rm -f "$d/gc.out" "$d/gc.ready" "$d/gc.pid"
	run_bg "$d" --grace-period 2s -- sh -c '"$1" survive "$2/gc.out" "$2/gc.ready" &
		echo $! > "$2/gc.pid"; "$1" waitfile "$2/gc.ready" 60 || exit 90; exit 3' sh "$H" "$d"
	if ! waitfile "$d/gc.ready"; then
		kill_tree "$BG"; finish_bg; fail "8 [$MODE] never got ready"; return
	fi
	t0=$(now)
	finish_bg
	el=$(elapsed_since "$t0")
	gcpid=$(cat "$d/gc.pid" 2>/dev/null)
	local gone=0
	# Killed and reaped by the agent before it exits: not even a zombie
	# handed over to the system's init may remain.
	if [ "$MODE" = plain ] && [ -n "$gcpid" ] && [ -e "/proc/$gcpid" ]; then
		proc_alive "$gcpid" && gone="1 (running)" || gone="1 (unreaped zombie)"
	fi
	check "8 [$MODE] grandchild ignoring SIGTERM is killed after --grace-period 2s (${el}s); exit 3" \
		"$([ "$RC" = 3 ] && [ "$(cat "$d/gc.out" 2>/dev/null)" = 15 ] && [ "$gone" = 0 ] &&
		   fcmp "$el" ">=" 1.9 && fcmp "$el" "<" $((2 + 10 * SLOW)); echo $?)" \
		"exit $RC, grandchild got: $(cat "$d/gc.out" 2>/dev/null), still alive: $gone"
}

# ------------------------------------------------------------------ 9
s9_sigmask() {
	local d=$1
	rm -f "$d/start" "$d/child"
	LAUNCH=(--block 10,28,RT2 --ignore 1,12,13,RT5 --state "$d/start")
	run_fg "$d" -- "$H" sigstate "$d/child"
	LAUNCH=()
	check "9 [$MODE] the command sees the mask and ignored set the agent started with" \
		"$([ "$RC" = 0 ] && [ -s "$d/start" ] && grep -q 'SigBlk:.*[1-9a-f]' "$d/start" &&
		   cmp -s "$d/start" "$d/child"; echo $?)" \
		"exit $RC, start: $(tr '\n\t' '  ' < "$d/start"), command: $(tr '\n\t' '  ' < "$d/child" 2>/dev/null)"
	rm -f "$d/start" "$d/child"
	LAUNCH=(--state "$d/start")
	run_fg "$d" -- "$H" sigstate "$d/child"
	LAUNCH=()
	check "9 [$MODE] started with nothing blocked or ignored, the command gets nothing blocked or ignored (SIGPIPE default)" \
		"$([ "$RC" = 0 ] && cmp -s "$d/start" "$d/child"; echo $?)" \
		"exit $RC, command: $(tr '\n\t' '  ' < "$d/child" 2>/dev/null)"
}

# ------------------------------------------------------------------ 10, 11
s10_stdin() {
	local d=$1
	agent_cmd -- sh
	echo 'exit 3' | "${CMD[@]}" >"$d/out" 2>"$d/err"
	RC=$?
	check "10 [$MODE] stdin passes through: echo 'exit 3' | civis-agent -- sh exits 3" \
		"$([ "$RC" = 3 ]; echo $?)" "got $RC"
}
s11_no_dashdash() {
	local d=$1
	run_fg "$d" sh -c 'exit 4'
	check "11 [$MODE] civis-agent sh -c 'exit 4' (no --) exits 4" \
		"$([ "$RC" = 4 ]; echo $?)" "got $RC: $(head -c 200 "$d/err")"
}

# ------------------------------------------------------------------ extras
s13_fds() {
	local d=$1 want
	# valgrind's own log files leak into the command (not the agent's doing).
	want=$("$H" fds "$WORK/vg/")
	run_fg "$d" -- "$H" fds "$WORK/vg/"
	check "13 [$MODE] the command inherits no agent descriptor (sees: $(cat "$d/out"))" \
		"$([ "$RC" = 0 ] && [ "$(cat "$d/out")" = "$want" ]; echo $?)" "want: $want"
}
s14_tee() {
	local d=$1 how args
	if [ ! -f "$WORK/tee.a" ]; then
		{ head -c $((TEE_MB * 1048576)) /dev/urandom; printf 'a\0\0\0x'; } > "$WORK/tee.a"
		{ printf '\0\0b'; head -c $((TEE_MB * 1048576)) /dev/urandom; printf '\r'; } > "$WORK/tee.b"
	fi
	# Without the API the output goes straight through (scenario 17); an
	# existing termination log keeps the pipes and the copy.
	for how in straight pipes; do
		args=()
		[ "$how" = pipes ] && args=(--termination-log "$TERMLOG")
		run_fg "$d" "${args[@]}" -- sh -c 'cat "$1/tee.b" >&2 & cat "$1/tee.a"; wait' sh "$WORK"
		# The agent may print notes of its own before the command runs (e.g.
		# "running without the Civis API"): whole leading lines, dropped here;
		# tee.b starts with NULs, so nothing of the command's can match.
		"$H" strip-notes "$d/err" "$d/err.cmd"
		check "14 [$MODE] byte-exact tee of ${TEE_MB} MB stdout and ${TEE_MB} MB stderr (NULs, no final newline; $how)" \
			"$([ "$RC" = 0 ] && cmp -s "$d/out" "$WORK/tee.a" && cmp -s "$d/err.cmd" "$WORK/tee.b"; echo $?)" \
			"exit $RC, sizes $(stat -c %s "$d/out") $(stat -c %s "$d/err.cmd")"
		rm -f "$d/out" "$d/err" "$d/err.cmd"
	done
}

# ------------------------------------------------------------------ 15
# Leftovers outside the command's group: a daemon that called setsid gets
# SIGTERM when the command exits and SIGKILL after the grace period, as PID
# 1 and as a subreaper, and the agent says so (exact lines).
LEFT1="civis-agent: the command exited and left 1 process running: sending SIGTERM, SIGKILL after"
s15_setsid_leftovers() {
	local d=$1 t0 el gcpid gone=0
	rm -f "$d/gc.out" "$d/gc.ready"
	t0=$(now)
	run_fg "$d" --grace-period 30s -- sh -c 'setsid "$1" catch 15 "$2/gc.out" "$2/gc.ready" &
		"$1" waitfile "$2/gc.ready" 60 || exit 90; exit 3' sh "$H" "$d"
	el=$(elapsed_since "$t0")
	check "15 [$MODE] setsid'ed grandchild gets SIGTERM when the command exits; exit 3 in ${el}s" \
		"$([ "$RC" = 3 ] && [ "$(cat "$d/gc.out" 2>/dev/null)" = 15 ] &&
		   grep -qFx "$LEFT1 30.0 s" "$d/err" && fcmp "$el" "<" $((15 * SLOW)); echo $?)" \
		"exit $RC, grandchild got: $(cat "$d/gc.out" 2>/dev/null), stderr: $(tr '\n' '|' < "$d/err")"
	rm -f "$d/gc.out" "$d/gc.ready" "$d/gc.pid"
	run_bg "$d" --grace-period 2s -- sh -c 'setsid "$1" survive "$2/gc.out" "$2/gc.ready" &
		echo $! > "$2/gc.pid"; "$1" waitfile "$2/gc.ready" 60 || exit 90; exit 3' sh "$H" "$d"
	if ! waitfile "$d/gc.ready"; then
		kill_tree "$BG"; finish_bg; fail "15 [$MODE] never got ready"; return
	fi
	t0=$(now)
	finish_bg
	el=$(elapsed_since "$t0")
	gcpid=$(cat "$d/gc.pid" 2>/dev/null)
	# Not PID 1: it would outlive the agent; it must be gone, reaped.
	if [ "$MODE" = plain ] && [ -n "$gcpid" ] && [ -e "/proc/$gcpid" ]; then
		proc_alive "$gcpid" && gone="1 (running)" || gone="1 (unreaped zombie)"
		kill -KILL "$gcpid" 2>/dev/null
	fi
	check "15 [$MODE] setsid'ed grandchild ignoring SIGTERM is killed after --grace-period 2s (${el}s); exit 3" \
		"$([ "$RC" = 3 ] && [ "$(cat "$d/gc.out" 2>/dev/null)" = 15 ] && [ "$gone" = 0 ] &&
		   grep -qFx "$LEFT1 2.0 s" "$d/err" &&
		   grep -qFx "civis-agent: the command's processes outlived the grace period (2.0 s): sending SIGKILL" "$d/err" &&
		   fcmp "$el" ">=" 1.9 && fcmp "$el" "<" $((2 + 10 * SLOW)); echo $?)" \
		"exit $RC, grandchild got: $(cat "$d/gc.out" 2>/dev/null), still alive: $gone, stderr: $(tr '\n' '|' < "$d/err")"
}

# ------------------------------------------------------------------ 16
# A stopped process (SIGTSTP, SIGSTOP) cannot run its SIGTERM handler: it
# gets SIGCONT after the SIGTERM, from a docker stop (SIGTERM to the agent)
# and when the command left it behind.
proc_state() { local st; read -r _ _ st _ 2>/dev/null < "/proc/$1/stat"; echo "$st"; }
s16_stopped() {
	local d=$1 a c i t0 el
	rm -f "$d/c.ready" "$d/c.out"
	run_bg "$d" --grace-period 10s -- sh -c 'trap "echo 15 > \"$1/c.out\"; exit 7" TERM
		: > "$1/c.ready"; kill -TSTP $$; exit 1' sh "$d"
	if ! waitfile "$d/c.ready"; then
		kill_tree "$BG"; finish_bg; fail "16 [$MODE] never got ready"; return
	fi
	a=$(agent_pid)
	read -r c _ 2>/dev/null < "/proc/$a/task/$a/children"
	for ((i = 0; i < 500 * SLOW; i++)); do
		[ "$(proc_state "$c")" = T ] && break
		sleep 0.01
	done
	t0=$(now)
	kill -TERM "$a"
	finish_bg
	el=$(elapsed_since "$t0")
	check "16 [$MODE] stopped command: SIGTERM to the agent, then SIGCONT; its handler exits 7 in ${el}s" \
		"$([ "$RC" = 7 ] && [ "$(cat "$d/c.out" 2>/dev/null)" = 15 ] &&
		   fcmp "$el" "<" $((5 * SLOW)); echo $?)" \
		"exit $RC, command wrote: $(cat "$d/c.out" 2>/dev/null)"

	printf '%s\n' 'trap "echo 15 > \"$1\"; exit 0" TERM' 'echo $$ > "$1.pid"' \
		'kill -STOP $$' 'exit 1' > "$d/stopper.sh"
	rm -f "$d/gc.out" "$d/gc.out.pid"
	t0=$(now)
	run_fg "$d" --grace-period 10s -- sh -c 'setsid sh "$1/stopper.sh" "$1/gc.out" &
		i=0; while [ $i -lt 3000 ]; do
			p=$(cat "$1/gc.out.pid" 2>/dev/null)
			[ -n "$p" ] && read -r _ _ st _ < "/proc/$p/stat" && [ "$st" = T ] && exit 3
			sleep 0.01; i=$((i + 1))
		done; exit 90' sh "$d"
	el=$(elapsed_since "$t0")
	check "16 [$MODE] stopped setsid'ed leftover: SIGTERM and SIGCONT when the command exits (${el}s); exit 3" \
		"$([ "$RC" = 3 ] && [ "$(cat "$d/gc.out" 2>/dev/null)" = 15 ] &&
		   grep -qFx "$LEFT1 10.0 s" "$d/err" && fcmp "$el" "<" $((5 * SLOW)); echo $?)" \
		"exit $RC, leftover wrote: $(cat "$d/gc.out" 2>/dev/null), stderr: $(tr '\n' '|' < "$d/err")"
}

# ------------------------------------------------------------------ 17
# Without the API, with the tee on, nothing to mask in it and no
# termination log, the command gets the agent's own stdout and stderr (no
# pipes, as under tini); an existing termination log keeps the pipes.
# Either way: its exit status, a SIGTERM forwarded, every orphan reaped.
# fds_are HOW DIR: DIR/fds has the command's fd 1 and 2 as readlink saw
# them: DIR/out and DIR/err themselves (straight), or two pipes.
TERMLOG=$WORK/termination-log
: > "$TERMLOG"
fds_are() {
	local how=$1 d=$2
	if [ "$how" = straight ]; then
		[ "$(cat "$d/fds" 2>/dev/null)" = "$(printf '%s\n%s' "$d/out" "$d/err")" ]
	else
		[ "$(grep -cx 'pipe:\[[0-9]*\]' "$d/fds" 2>/dev/null)" = 2 ]
	fi
}
s17_passthrough() {
	local d=$1 how args a
	local probe='readlink /proc/$$/fd/1 /proc/$$/fd/2 | cat > "$1/fds"'
	for how in straight pipes; do
		args=()
		[ "$how" = pipes ] && args=(--termination-log "$TERMLOG")
		rm -f "$d/fds"
		run_fg "$d" "${args[@]}" -- sh -c "$probe; exit 7" sh "$d"
		check "17 [$MODE] $how: fd 1 and 2 of the command are $([ "$how" = straight ] &&
			echo "the agent's own files" || echo pipes); exit 7" \
			"$([ "$RC" = 7 ] && fds_are "$how" "$d"; echo $?)" \
			"exit $RC, fds: $(tr '\n' ' ' < "$d/fds" 2>/dev/null)"

		rm -f "$d/fds" "$d/ready"
		run_bg "$d" "${args[@]}" -- sh -c "$probe; exec \"\$2\" waitsig \"\$1/ready\"" sh "$d" "$H"
		if ! waitfile "$d/ready"; then
			kill_tree "$BG"; finish_bg; fail "17 [$MODE] $how: never got ready"; continue
		fi
		a=$(agent_pid)
		kill -TERM "$a"
		finish_bg
		check "17 [$MODE] $how: SIGTERM to the agent reaches the command: exit 143" \
			"$([ "$RC" = 143 ] && fds_are "$how" "$d"; echo $?)" \
			"exit $RC, fds: $(tr '\n' ' ' < "$d/fds" 2>/dev/null)"

		rm -f "$d/fds"
		run_fg "$d" "${args[@]}" -- sh -c "$probe; exec \"\$2\" reap 20" sh "$d" "$H"
		check "17 [$MODE] $how: 20 orphaned grandchildren reaped, no zombie left" \
			"$([ "$RC" = 0 ] && fds_are "$how" "$d" &&
			   grep -qFx 'adopted 20 of 20, not adopted 0, left 0 (zombies 0)' "$d/out"; echo $?)" \
			"exit $RC: $(cat "$d/out"), fds: $(tr '\n' ' ' < "$d/fds" 2>/dev/null)"
	done
}

# ------------------------------------------------------------------ run
want() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }
for MODE in $MODES; do
	if [ "$MODE" = pid1 ] && ! unshare --pid --fork --mount-proc true 2>/dev/null; then
		fail "[pid1] cannot create a PID namespace here (root or user namespaces needed)"
		continue
	fi
	D=$WORK/$MODE
	mkdir -p "$D"
	want 1 && s1_exit_codes "$D"
	want 2 && s2_exec_failure "$D"
	want 3 && s3_zombies "$D"
	want 5 && s5_signals_kill "$D"
	want 6 && s6_all_signals "$D"
	want 7 && s7_group "$D"
	want 8 && s8_orphaned_group "$D"
	want 9 && s9_sigmask "$D"
	want 10 && s10_stdin "$D"
	want 11 && s11_no_dashdash "$D"
	want 13 && s13_fds "$D"
	want 14 && s14_tee "$D"
	want 15 && s15_setsid_leftovers "$D"
	want 16 && s16_stopped "$D"
	want 17 && s17_passthrough "$D"
done

# ------------------------------------------------------------------ 12
if [ "$VG" = 1 ]; then
	# A log with no summary is the command's side of a fork that went on
	# to exec (valgrind does not follow it); every other log must be clean.
	bad= nlogs=0
	for f in "$WORK"/vg/*.log; do
		[ -e "$f" ] || continue
		if grep -q "impossible' happened" "$f"; then bad="$bad $f"; continue; fi
		grep -q 'ERROR SUMMARY:' "$f" || continue
		nlogs=$((nlogs + 1))
		grep -q 'ERROR SUMMARY: 0 errors' "$f" || bad="$bad $f"
	done
	for f in $bad; do echo "--- $f"; cat "$f"; done
	check "12 valgrind: no error, no definite leak in $nlogs agent processes" \
		"$([ -z "$bad" ] && [ "$nlogs" -gt 0 ]; echo $?)" "see logs above"
else
	echo "skip - 12 valgrind: run with RUNNER=valgrind... (make pid1-valgrind)"
fi

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" = 0 ]
