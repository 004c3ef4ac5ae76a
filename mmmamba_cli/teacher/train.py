"""Train the tiny HoVLE-architecture teacher on easy-vqa (the project's embedded default).

`mmmamba train-teacher --recipe teacher-easyvqa` runs this; the result is a model directory
(config.json, model.safetensors, HF tokenizer files, train_report.json).
"""
from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..data import IMG_CONTEXT
from ..distill.stages import decays
from ..io.files import atomic_dir
from ..io.save import git_sha, write_model_files
from ..model.config import LayerShape, ModelConfig, VisionSettings
from ..model.model import MMModel
from .easyvqa_data import EasyVQA, easyvqa_tokenizer, first_token_accuracy, training_batch


@dataclass
class TeacherRecipe:
    """Sizes and schedule of the embedded teacher."""

    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    num_embed_layers: int = 4
    num_llm_layers: int = 4
    image_size: int = 64
    patch_size: int = 8
    downsample_ratio: float = 0.5
    rope_theta: float = 10000.0
    steps: int = 3000
    curriculum_steps: int = 0  # first steps train on direct shape/colour questions only
    batch_images: int = 32
    max_turns: int = 6
    lr: float = 2e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    augment: bool = True
    shape_first: bool = False  # open each conversation with a "what shape" question when there is one
    max_shift: int = 0  # random translation augmentation, pixels
    seed: int = 0
    eval_every: int = 500
    eval_limit: int = 2000
    threads: int = 0  # 0 = torch default
    init_from: Optional[str] = None  # continue from this teacher directory's weights (same sizes)


def teacher_config(r: TeacherRecipe, tokenizer) -> ModelConfig:
    shape = LayerShape(num_heads=r.num_heads, num_kv_heads=r.num_kv_heads, head_dim=r.hidden_size // r.num_heads,
                       intermediate_size=r.intermediate_size, rope_theta=r.rope_theta, max_position_embeddings=4096)
    vision = VisionSettings(image_size=r.image_size, patch_size=r.patch_size, max_tiles=1, use_thumbnail=False,
                            downsample_ratio=r.downsample_ratio)
    return ModelConfig(hidden_size=r.hidden_size, vocab_size=len(tokenizer), num_embed_layers=r.num_embed_layers,
                       num_llm_layers=r.num_llm_layers, embed_layer=shape, llm_layer=shape, vision=vision,
                       img_context_token_id=tokenizer.convert_tokens_to_ids(IMG_CONTEXT),
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, template="internlm2-chat")


def init_weights(model: MMModel, seed: int) -> None:
    """GPT-style init: N(0, 0.02), output projections scaled by 1/sqrt(2 * layers)."""
    g = torch.Generator().manual_seed(seed)
    std_out = 0.02 / math.sqrt(2 * len(model.layers))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2 or "norm" in name:
                if name.endswith("bias"):
                    p.zero_()
                continue
            std = std_out if name.endswith(("o_proj.weight", "w2.weight")) else 0.02
            p.copy_(torch.randn(p.shape, generator=g) * std)


def lr_at(step: int, r: TeacherRecipe) -> float:
    if step < r.warmup_steps:
        return r.lr * (step + 1) / r.warmup_steps
    t = (step - r.warmup_steps) / max(1, r.steps - r.warmup_steps)
    return r.lr * (r.min_lr_ratio + (1 - r.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def train_teacher(r: TeacherRecipe, out: str | Path, force: bool = False, log=print,
                  checkpoint: str | Path | None = None) -> dict:
    if r.threads:
        torch.set_num_threads(r.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(r.seed)
    rng = random.Random(r.seed)
    tokenizer = easyvqa_tokenizer()
    config = teacher_config(r, tokenizer)
    model = MMModel(config)
    init_weights(model, r.seed)
    if r.init_from:
        from ..io.files import read_state_dir
        model.load_state_dict(read_state_dir(Path(r.init_from)))
    tpt = config.vision.tokens_per_tile
    train, test = EasyVQA("train", config.vision), EasyVQA("test", config.vision)
    decay = [p for n, p in model.named_parameters() if decays(n)]
    other = [p for n, p in model.named_parameters() if not decays(n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                             {"params": other, "weight_decay": 0.0}], lr=r.lr, betas=(0.9, 0.95))
    order: list[int] = []
    history, t0, tokens = [], time.time(), 0
    for step in range(r.steps):
        model.train()
        if len(order) < r.batch_images:
            order += rng.sample(range(len(train.paths)), len(train.paths))
        ids, order = order[:r.batch_images], order[r.batch_images:]
        b = training_batch(train, ids, tokenizer, tpt, r.max_turns, rng, r.augment,
                           direct_only=step < r.curriculum_steps, shape_first=r.shape_first,
                           max_shift=r.max_shift)
        logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"])
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), ignore_index=-100)
        for gparam in opt.param_groups:
            gparam["lr"] = lr_at(step, r)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
        tokens += int(b["attention_mask"].sum())
        if (step + 1) % 50 == 0:
            log(f"step {step + 1}/{r.steps} loss {loss.item():.4f} lr {lr_at(step, r):.2e} "
                f"{tokens / (time.time() - t0):.0f} tok/s")
        if (step + 1) % r.eval_every == 0 and step + 1 < r.steps:
            by_type: dict = {}
            acc = first_token_accuracy(model, test, tokenizer, tpt, limit=r.eval_limit, by_type=by_type)
            history.append({"step": step + 1, "test_accuracy_subset": acc, "by_type": by_type, "loss": loss.item()})
            log(f"step {step + 1}: test accuracy (first {r.eval_limit}) {acc:.4f} {by_type}")
            if checkpoint is not None:
                torch.save(model.state_dict(), checkpoint)
    by_type = {}
    acc = first_token_accuracy(model, test, tokenizer, tpt, by_type=by_type)
    train_acc = first_token_accuracy(model, train, tokenizer, tpt, limit=5000)
    report = {"test_accuracy": acc, "test_accuracy_by_type": by_type, "test_questions": len(test.questions), "train_accuracy_first5000": train_acc,
              "params": model.num_params(), "steps": r.steps, "train_seconds": round(time.time() - t0, 1),
              "history": history, "recipe": dataclasses.asdict(r), "git_sha": git_sha(),
              "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    log(f"test accuracy {acc:.4f} on {len(test.questions)} questions ({model.num_params()} params)")
    with atomic_dir(out, force) as tmp:
        tokenizer.save_pretrained(str(tmp))
        write_model_files(tmp, config, model.state_dict(), extra_json={"train_report.json": report})
    return report
