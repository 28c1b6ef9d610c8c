# make image-test: docker/Dockerfile built by a real container engine and
#   user images made from it (Debian slim + Python running examples/python,
#   scratch + busybox, no shell and no libc with a static binary as the
#   command) run against the simulator on the host (tests/image/test_image.py).
#   The engine is $(CONTAINER_ENGINE) (default podman; docker works the
#   same); base images are made locally (debootstrap, busybox-static) when
#   the engine has none, cached in $(IMAGE_CACHE) and the engine's store, so
#   a second run is quick. Prints "image-test: N passed, N failed, N skipped".
# make image-bench: the layer's size, the start-up the agent adds to a
#   container run and its RSS inside one (tests/image/bench.py).
.PHONY: image-test image-bench

CONTAINER_ENGINE ?= podman
IMAGE_CACHE ?= build/image
IMAGE_JOB   := $(IMAGE_CACHE)/job
IMAGE_BENCH_RUNS ?= 31
PYTHON ?= python3

# The user's command of the no-libc image: static (musl-gcc when there is
# one, else the C compiler's -static).
$(IMAGE_JOB): tests/image/job.c
	@mkdir -p $(dir $@)
	if command -v musl-gcc >/dev/null 2>&1; then cc=musl-gcc; else cc="$(CC)"; fi; \
	$$cc -static -Os -s -std=c11 -Wall -Wextra -Werror -o $@ $<

image-test: $(IMAGE_JOB)
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) $(PYTHON) tests/image/test_image.py --job $(IMAGE_JOB) \
	    --cache $(IMAGE_CACHE)

image-bench: $(IMAGE_JOB)
	CONTAINER_ENGINE=$(CONTAINER_ENGINE) $(PYTHON) tests/image/bench.py --job $(IMAGE_JOB) \
	    --cache $(IMAGE_CACHE) --runs $(IMAGE_BENCH_RUNS)
