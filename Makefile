# The two commands the README promises: `make demo` and `make test`.
.PHONY: setup demo test test-fast
setup:
	bash scripts/setup.sh

# Convert the embedded model to Q8_0 and Q4_K_M and print the summary.
demo: setup
	.venv/bin/edgeq convert --q8 --q4

# Every test, the slow end-to-end ones included (what CI runs), and where the time went. Two workers
# (pytest-xdist): most of a test's time is a child process starting, a converter importing torch, a tool
# loading a model, which overlap well on two cores. A module runs whole on one worker (--dist loadfile), so
# its module fixtures (a tune, a ship, RPC hosts) are made once; the longest modules go first (conftest.py), which
# needs --no-loadscope-reorder: by default xdist reorders the modules by their number of tests.
test: setup
	.venv/bin/python -m pytest -m "slow or not slow" -n 2 --dist loadfile --no-loadscope-reorder --durations=25

# The inner loop: the tests that need no conversion, no tune and no emulator (under 3 minutes).
test-fast:
	.venv/bin/python -m pytest -m "not slow" -n 2 --dist loadfile --no-loadscope-reorder
