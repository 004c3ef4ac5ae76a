"""lm-evaluation-harness model ``mmmamba``: any model directory this toolkit loads (teacher, linear
or hybrid student) on lm-eval's text tasks.

lm-eval 0.4 finds models only in its registry and has no plugin entry point for them, so the
class must be imported before lm-eval's command line runs. This module's ``main`` does that:

    python -m mmmamba_cli.lm_eval_model --model mmmamba --model_args pretrained=DIR --tasks TASKS

takes every option of ``lm_eval``; from Python, ``register()`` then ``lm_eval.simple_evaluate``.
Model arguments: ``pretrained`` (required), ``batch_size`` (8), ``max_length`` (the model's
maximum positions), ``max_gen_toks`` (256), ``device`` (auto), ``dtype``, ``add_bos_token``.
"""
from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window, simple_parse_args_string
from tqdm import tqdm

from .data import collate
from .data.prompt import render_chat  # the same prompt format as generate and eval
from .io.pretrained import load_pretrained
from .runtime import SamplingSettings, TextWatch, cut_at, generate

NAME = "mmmamba"
log = logging.getLogger(__name__)


class MMambaLM(TemplateLM):
    """loglikelihood, loglikelihood_rolling and generate_until over left-padded batches."""

    def __init__(self, pretrained: str, batch_size: int | str = 8, max_length: int | None = None,
                 max_gen_toks: int = 256, device: str | None = None, dtype: str | None = None,
                 add_bos_token: bool = False, **_ignored):
        super().__init__()
        if str(device or "").startswith("cuda") and not torch.cuda.is_available():
            log.warning("device %s requested but CUDA is not available: running on the CPU", device)
            device = "cpu"
        self.model, self.tokenizer, _ = load_pretrained(pretrained, device, dtype)
        self.pretrained = str(pretrained)
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 8  # "auto" -> 8
        self.max_length = int(max_length or self.model.config.llm_layer.max_position_embeddings)
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = str(add_bos_token).lower() in ("1", "true", "yes")
        self._device = next(self.model.parameters()).device
        c = self.model.config
        self.pad = next((t for t in (c.pad_token_id, self.tokenizer.pad_token_id, c.eos_token_id) if t is not None), 0)

    @classmethod
    def create_from_arg_obj(cls, arg_dict: dict, additional_config: dict | None = None) -> "MMambaLM":
        """``--model_args`` win over lm-eval's general options (its ``--device`` defaults to cuda:0)."""
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in arg_dict}
        return cls(**arg_dict, **extra)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None) -> "MMambaLM":
        return cls.create_from_arg_obj(simple_parse_args_string(arg_string), additional_config)

    # ---- tokens ----------------------------------------------------------------------------
    @property
    def eot_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return eos if eos is not None else self.model.config.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.model.config.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return self.pretrained

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        special = self.add_bos_token if add_special_tokens is None else add_special_tokens
        return self.tokenizer.encode(string, add_special_tokens=special)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return render_chat(self.tokenizer, self.model.config, chat_history, add_generation_prompt)

    # ---- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: [(cache key | None, context ids, continuation ids)] -> [(log p(cont), greedy?)]."""
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        for start in tqdm(range(0, len(order), self.batch_size), disable=disable_tqdm, desc="loglikelihood"):
            idx = order[start:start + self.batch_size]
            conts = [requests[i][2] for i in idx]
            inputs = [(requests[i][1] + requests[i][2])[-(self.max_length + 1):][:-1] for i in idx]
            b = collate([{"input_ids": x} for x in inputs], self.pad, padding_side="left")
            keep = max(len(c) for c in conts)
            logits = self.model(b["input_ids"].to(self._device), attention_mask=b["attention_mask"].to(self._device),
                                logits_to_keep=keep)
            # rows end together (left padding); one row's continuation at a time: no (b, keep, V) fp32 copy
            for row, (i, cont) in enumerate(zip(idx, conts)):
                lp = F.log_softmax(logits[row, keep - len(cont):].float(), -1)  # (len(cont), V)
                target = torch.tensor(cont, device=lp.device)
                result = (float(lp.gather(-1, target[:, None]).sum()), bool((lp.argmax(-1) == target).all()))
                out[i] = result
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], result)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Sum of token log-probs of each whole string, in disjoint windows of ``max_length``."""
        pieces, owner = [], []
        for n, req in enumerate(requests):
            windows = get_rolling_token_windows(token_list=self.tok_encode(req.args[0]),
                                                prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                                                context_len=1)
            for context, continuation in map(make_disjoint_window, windows):
                pieces.append((None, context, continuation))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owner, self._loglikelihood_tokens(pieces, disable_tqdm)):
            totals[n] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), total)
        return totals

    # ---- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy (or sampled, when asked) generation cut at the first stop string."""
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = defaultdict(list)  # same generation settings -> one batch
        for i, req in enumerate(requests):
            groups[json.dumps(req.args[1], sort_keys=True, default=str)].append(i)
        for members in groups.values():
            kwargs = dict(requests[members[0]].args[1])
            settings, until = self._settings(kwargs)
            for start in tqdm(range(0, len(members), self.batch_size), disable=disable_tqdm, desc="generate_until"):
                idx = members[start:start + self.batch_size]
                room = max(1, self.max_length - settings.max_new_tokens)
                ids = [self.tok_encode(requests[i].args[0])[-room:] for i in idx]
                b = collate([{"input_ids": x} for x in ids], self.pad, padding_side="left")
                watch = TextWatch(self.tokenizer, len(idx), until, eos_token_id=settings.eos_token_id)
                new = generate(self.model, b["input_ids"].to(self._device),  # rows end at a stop string
                               attention_mask=b["attention_mask"].to(self._device), settings=settings,
                               on_step=watch if until else None)
                for i, tokens in zip(idx, new):
                    text = cut_at(self.tokenizer.decode(tokens, skip_special_tokens=True), until)
                    out[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
        return out

    def _settings(self, kwargs: dict) -> tuple[SamplingSettings, list[str]]:
        until = kwargs.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        sample = bool(kwargs.get("do_sample", False)) and float(kwargs.get("temperature", 1.0)) > 0
        settings = SamplingSettings(max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                                    temperature=float(kwargs.get("temperature", 1.0)) if sample else 0.0,
                                    top_p=float(kwargs.get("top_p", 1.0)) if sample else 1.0,
                                    eos_token_id=self.model.config.eos_token_id)
        return settings, until


def register() -> None:
    """Put ``mmmamba`` in lm-eval's model registry (after its own models, which load lazily)."""
    import lm_eval.models  # noqa: F401 - registers lm-eval's own names first
    from lm_eval.api.registry import model_registry

    if NAME not in model_registry:
        model_registry.register(NAME, target=MMambaLM)


register()


def main(argv: list[str] | None = None) -> None:
    """lm-eval's own command line, with ``--model mmmamba`` available."""
    from lm_eval.__main__ import cli_evaluate  # deferred: only for the command line

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
