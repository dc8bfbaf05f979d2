# Two entry points: `make demo` runs the main job, `make test` runs the tests.
# Each creates .venv from the pinned requirements when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKDIR ?= workdir/demo

.PHONY: demo test bench venv clean

$(BIN)/.installed: requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

venv: $(BIN)/.installed

test: venv
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n 2 --dist loadfile tests

demo: venv
	$(BIN)/python -m mlst_jax.jobs.demo --workdir $(WORKDIR)

bench: venv
	$(BIN)/python -m bench.fbank_speed
	$(BIN)/python -m bench.beam_search_speed
	$(BIN)/python -m bench.train_step_speed
	$(BIN)/python -m bench.pipeline_speed
	$(BIN)/python -m bench.sharing_step_speed
	$(BIN)/python -m bench.task_grad_speed
	$(BIN)/python -m bench.wav2vec2_speed

clean:
	rm -rf $(VENV) workdir
