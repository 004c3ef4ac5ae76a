"""lmms-eval model ``mmmamba``: any model directory this toolkit loads (teacher, linear or hybrid
student) on lmms-eval's image-text tasks.

An installed package registers the model through lmms-eval's ``lmms_eval.models`` entry point
(pyproject.toml); ``python -m mmmamba_cli.lmms_eval_model`` registers it by hand first, then
runs lmms-eval's command line with every option it takes:

    python -m mmmamba_cli.lmms_eval_model --model mmmamba --model_args pretrained=DIR \
        --tasks TASK [--include_path TASK_DIR] --batch_size 8 --output_path OUT

Model arguments: ``pretrained`` (required), ``batch_size`` (8), ``max_new_tokens`` (32, when
the task gives none), ``device`` (auto), ``dtype``. Images come from the task's
``doc_to_visual``; each becomes its tiles and image tokens in the HoVLE chat prompt.
"""
from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from lmms_eval.api.registry import register_model

from .data import build_prompt, collate, load_image
from .io.pretrained import load_pretrained as load_for_eval
from .runtime import SamplingSettings, generate

NAME = "mmmamba"
CLASS_PATH = f"{__name__}.MMambaLMMS"


@register_model(NAME)
class MMambaLMMS(lmms):
    """generate_until and loglikelihood over left-padded batches, one prompt per request."""

    def __init__(self, pretrained: str, batch_size: int | str = 8, max_new_tokens: int | str = 32,
                 device: str | None = None, dtype: str | None = None, **_ignored):
        super().__init__()
        if str(device or "").startswith("cuda") and not torch.cuda.is_available():
            device = "cpu"
        self.model, self.tokenizer, _ = load_for_eval(pretrained, device, dtype)
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 8
        self.max_new_tokens = int(max_new_tokens)
        self._device = next(self.model.parameters()).device
        c = self.model.config
        self.pad = next((t for t in (c.pad_token_id, self.tokenizer.pad_token_id, c.eos_token_id) if t is not None), 0)

    # ---- prompts -------------------------------------------------------------------------
    def _visuals(self, doc_to_visual, doc_id, task, split) -> list:
        if doc_to_visual is None:
            return []
        visuals = doc_to_visual(self.task_dict[task][split][doc_id])
        visuals = visuals if isinstance(visuals, (list, tuple)) else [visuals]
        return [v for v in visuals if v is not None]

    def _inputs(self, context: str, visuals: list) -> dict:
        """Chat prompt ids (ending with the assistant header) and the images' tiles."""
        c = self.model.config
        if visuals and c.vision is None:
            raise ValueError(f"{NAME}: the task gives images but this model has no vision settings")
        tiles = [load_image(v, c.vision) for v in visuals]
        text = "".join("<image>\n" for _ in tiles) + context
        ids = build_prompt(self.tokenizer, text, [t.shape[0] for t in tiles],
                           c.vision.tokens_per_tile if c.vision else 0, c.system_prompt)
        return {"input_ids": ids, "pixel_values": torch.cat(tiles) if tiles else None}

    def _batch(self, items: list[dict]) -> dict:
        b = collate(items, self.pad, padding_side="left")
        return {k: (v.to(self._device) if v is not None else None) for k, v in b.items() if k != "labels"}

    # ---- requests ------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, requests: list[Instance]) -> list[str]:
        out: list[str] = [""] * len(requests)
        for start in range(0, len(requests), self.batch_size_per_gpu):
            chunk = list(range(start, min(start + self.batch_size_per_gpu, len(requests))))
            # one batch shares one generation length: the longest any of its requests asks for
            kwargs = [dict(requests[i].args[1] or {}) for i in chunk]
            items = [self._inputs(requests[i].args[0], self._visuals(*requests[i].args[2:6])) for i in chunk]
            b = self._batch(items)
            settings = SamplingSettings(max_new_tokens=max(int(k.get("max_new_tokens", self.max_new_tokens))
                                                           for k in kwargs),
                                        temperature=0.0, eos_token_id=self.model.config.eos_token_id)
            new = generate(self.model, b["input_ids"], b["pixel_values"], b["attention_mask"], settings)
            for i, k, tokens in zip(chunk, kwargs, new):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                until = k.get("until") or []
                for stop in [until] if isinstance(until, str) else until:
                    if stop:
                        text = text.split(stop)[0]
                out[i] = text.strip()
                self.cache_hook.add_partial("generate_until", (requests[i].args[0], k), out[i])
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        return self.generate_until(requests)

    @torch.no_grad()
    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """log p(continuation | chat prompt with the images) and whether greedy decoding gives it."""
        out: list[tuple[float, bool]] = []
        for req in requests:
            context, target, doc_to_visual, doc_id, task, split = req.args
            if callable(target):
                target = target(self.task_dict[task][split][doc_id])
            item = self._inputs(context, self._visuals(doc_to_visual, doc_id, task, split))
            cont = self.tokenizer.encode(str(target), add_special_tokens=False)
            ids = item["input_ids"] + cont
            b = self._batch([{"input_ids": ids[:-1], "pixel_values": item["pixel_values"]}])
            logits = self.model(b["input_ids"], b["pixel_values"], b["attention_mask"], logits_to_keep=len(cont))
            logp = F.log_softmax(logits[0].float(), -1)  # (len(cont), V)
            want = torch.tensor(cont, device=logp.device)
            out.append((float(logp.gather(-1, want[:, None]).sum()), bool((logp.argmax(-1) == want).all())))
        return out


def manifest():
    """The entry point payload lmms-eval loads (group ``lmms_eval.models``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=NAME, simple_class_path=CLASS_PATH)


def register() -> None:
    """Make ``--model mmmamba`` known to lmms-eval in this process (no installed entry point needed)."""
    from lmms_eval.models import MODEL_REGISTRY_V2

    MODEL_REGISTRY_V2.register_manifest(manifest(), overwrite=True)
    _filelock_compat()


def _filelock_compat() -> None:
    """lmms-eval 0.7's evaluator patches the private ``filelock._api`` module of filelock 3; with
    filelock 4 (no such module) that import fails, so the patch is marked done and skipped."""
    import importlib.util

    if importlib.util.find_spec("filelock._api") is None:
        import lmms_eval.evaluator as evaluator

        patch = getattr(evaluator, "_enable_reentrant_filelocks", None)
        if patch is not None:
            patch._patched = True


def main(argv: list[str] | None = None) -> None:
    register()
    from lmms_eval.__main__ import cli_evaluate

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    cli_evaluate()


if __name__ == "__main__":
    main()
