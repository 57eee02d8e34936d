# The two commands the README promises: `make demo` and `make test`.
.PHONY: setup demo test test-fast
setup:
	bash scripts/setup.sh

# Convert the embedded model to Q8_0 and Q4_K_M and print the summary.
demo: setup
	.venv/bin/edgeq convert --q8 --q4

# Every test, the slow end-to-end ones included (what CI runs), and where the time went.
test: setup
	.venv/bin/python -m pytest -m "slow or not slow" --durations=25

test-fast:
	.venv/bin/python -m pytest -m "not slow"
