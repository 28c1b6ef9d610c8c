#!/bin/sh
# hello: the smallest Civis container job. civis-agent (the image's
# ENTRYPOINT) streams these lines to the run log, stdout at level info and
# stderr at level error, and uploads what is left in the output directory.
set -eu

out=${CIVIS_AGENT_OUTPUT_DIR:-/output}
mkdir -p "$out"

echo "hello from job ${CIVIS_JOB_ID:-?}, run ${CIVIS_RUN_ID:-?}"
echo "this line goes to stderr" >&2
for step in 1 2 3; do
	echo "step $step of 3"
done
printf 'greeting,count\nhello,3\n' > "$out/hello.csv"
echo "wrote $(wc -c < "$out/hello.csv") bytes to hello.csv"

# HELLO_EXIT lets a test check that the job's exit status is the run's.
exit "${HELLO_EXIT:-0}"
