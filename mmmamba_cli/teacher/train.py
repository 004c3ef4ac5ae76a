"""Train the tiny HoVLE-architecture teacher on easy-vqa (the project's embedded default).

`mmmamba train-teacher --recipe teacher-easyvqa` runs this; the result is a model directory
(config.json, model.safetensors, HF tokenizer files, train_report.json).
"""
from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from ..data import IMG_CONTEXT
from ..io.files import atomic_dir, check_output_dir, read_state_dir
from ..io.load import check_state
from ..io.save import git_sha, write_model_files
from ..model.config import LayerShape, ModelConfig, VisionSettings
from ..model.init import init_weights
from ..model.model import MMModel
from ..model.optim import OptimSection, make_optimizer, wsd_scheduler
from .easyvqa_data import (ALL_WORDINGS, PLAIN_WORDINGS, STAGED_WORDINGS, EasyVQA, attribute_targets, comparison_batch,
                           comparison_pools, easyvqa_tokenizer, first_token_accuracy, image_word_targets, training_batch,
                           yes_no_balance)


@dataclass
class ModelSection:
    """Sizes of the tiny HoVLE-architecture teacher (holistic embedding: no separate vision encoder)."""

    hidden_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 384
    num_embed_layers: int = 4
    """Layers of the holistic embedding module (text and image tokens alike)."""
    num_llm_layers: int = 4
    image_size: int = 64
    patch_size: int = 4
    downsample_ratio: float = 0.25
    """Pixel shuffle: 64/4 = 16x16 patches -> 4x4 = 16 image tokens at 0.25 (64 at 0.5)."""
    rope_theta: float = 10000.0
    tie_embeddings: bool = False
    """One table for input and output token embeddings."""
    stem_init: str = "normal"
    """Vision stem matrices: "normal" (N(0, 0.02) like every other matrix) or "fan_in" (N(0, 1/fan_in):
    unit-scale image features from the start)."""


@dataclass
class DataSection:
    """How easy-vqa train images become conversations."""

    max_turns: int = 4
    """Questions of one image per training conversation (the image is encoded once)."""
    shape_first: bool = False
    """Open each conversation with a "what shape" question when the image has one."""
    augment: bool = True
    """Random flips and quarter turns (shapes and colours do not change under them)."""
    max_shift: int = 0
    """Random translation by up to this many pixels (edges repeated); 0: none."""
    shape_steps: int = 0
    """First steps train on one "what shape" question per image and nothing else: outlines are what
    the stem learns slowest, and in the full mix shape accuracy sits near 0.45 for thousands of steps."""
    curriculum_steps: int = 600
    """The next steps train on direct shape/colour questions only (grounding before yes/no)."""
    compare_steps: int = 0
    """After the curriculum, steps of single questions that need a word compared with the image (see
    ``easyvqa_data.comparison_batch``): yes and no equally likely within each yes/no wording, plain
    wordings ("is there a red shape?") alone in the first half, negated ones ("is there not a red
    shape?") joining in the second. Without it the teacher answers colour yes/no by the wording's prior;
    with it but without ``attribute_loss`` yes/no stays near chance (benchmarks/results/teacher_easyvqa.md)."""
    compare_staged: bool = False
    """Add the wordings one at a time, a quarter of the comparison steps each (colour plain, shape plain,
    colour negated, shape negated) instead of plain ones for a half and all for the other."""
    compare_direct: float = 0.3
    """Fraction of "what colour / what shape" questions in those steps."""
    image_word_loss: float = 0.0
    """Weight of an auxiliary loss that has every image token predict the image's colour or shape word
    (alternately): the image tokens then carry the very words a yes/no question names. 0: off."""
    attribute_loss: float = 0.0
    """Weight of an auxiliary loss on every position that predicts an answer: three linear heads read
    layer ``attribute_layer``'s output there and predict the colour or shape word the question names,
    the image's colour and the image's shape. It gives the answer position a first-order reason to
    gather both sides of a yes/no comparison; without it balanced yes/no stays at chance. The heads
    are used in training only and are not saved. 0: off."""
    attribute_layer: int = -3
    """Decoder layer whose output the attribute heads read: 0-based with the embedding layers first, or
    negative from the top (-3: the third from the top, leaving two layers to compare)."""
    balance_yes_no: bool = False
    """Drop majority answers of yes/no questions so that yes and no are equally likely within each
    wording (colour/shape, negated or not); otherwise the wording alone predicts colour yes/no answers."""


@dataclass
class TrainSection:
    steps: int = 3000
    batch_images: int = 32
    """Images (conversations) per step."""
    seed: int = 0
    threads: int = 0
    """torch CPU threads (0: torch's default)."""
    eval_every: int = 250
    """Test accuracy on the first eval_limit questions every this many steps (0: only at the end)."""
    eval_limit: int = 2000
    init_from: Optional[str] = None
    """Continue from this teacher directory's weights (same sizes)."""
    init_required: bool = False
    """The recipe continues a trained teacher (teacher-easyvqa-compare.yaml): refuse to start without
    ``init_from`` rather than train its later phases from random weights."""


@dataclass
class TeacherRecipe:
    """The embedded teacher's recipe: ``recipes/teacher-easyvqa.yaml`` <- ``key=value`` overrides."""

    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    optim: OptimSection = field(default_factory=lambda: OptimSection(
        lr=2e-3, betas=[0.9, 0.95], weight_decay=0.05, grad_clip=1.0, warmup=0.033, decay=0.3, min_lr_ratio=0.05))

    def check(self) -> list[str]:
        m, t, e = self.model, self.train, list(self.optim.check())
        e += [f"{k} must be > 0, got {v}" for k, v in {
            "train.steps": t.steps, "train.batch_images": t.batch_images, "data.max_turns": self.data.max_turns,
            "model.hidden_size": m.hidden_size, "model.patch_size": m.patch_size}.items() if not v > 0]
        if m.hidden_size % m.num_heads or m.num_heads % m.num_kv_heads:
            e.append(f"model.hidden_size {m.hidden_size}, num_heads {m.num_heads}, num_kv_heads {m.num_kv_heads}: "
                     "heads must divide the width and KV heads the heads")
        if m.stem_init not in STEM_INITS:
            e.append(f"model.stem_init must be one of {', '.join(STEM_INITS)}, got {m.stem_init!r}")
        if m.image_size % m.patch_size:
            e.append(f"model.patch_size {m.patch_size} does not divide model.image_size {m.image_size}")
        e += [f"{k} must be >= 0, got {v}" for k, v in {
            "data.max_shift": self.data.max_shift, "data.shape_steps": self.data.shape_steps,
            "data.curriculum_steps": self.data.curriculum_steps, "data.image_word_loss": self.data.image_word_loss,
            "data.compare_steps": self.data.compare_steps, "data.attribute_loss": self.data.attribute_loss,
            "train.eval_every": t.eval_every, "train.threads": t.threads}.items() if v < 0]
        if t.init_required and not t.init_from:
            e.append("train.init_from is required: this recipe continues a trained teacher "
                     "(train.init_from=DIR, e.g. the output of --recipe teacher-easyvqa)")
        n = m.num_embed_layers + m.num_llm_layers
        if self.data.attribute_loss and not -n <= self.data.attribute_layer < n:
            e.append(f"data.attribute_layer must name one of the {n} decoder layers (0 to {n - 1}, or -1 to -{n} "
                     f"from the top), got {self.data.attribute_layer}")
        return e


STEM_INITS = ("normal", "fan_in")


@torch.no_grad()
def fan_in_stem(model: MMModel, seed: int) -> None:
    """Redraw the vision stem's matrices as N(0, 1/fan_in), so image features start at unit scale."""
    g = torch.Generator().manual_seed(seed + 1)
    stem = model.embed.vision
    for w in (stem.patch_embedding.weight, stem.proj[0].weight, stem.proj[2].weight):
        w.copy_(torch.randn(w.shape, generator=g) / w[0].numel() ** 0.5)


def load_init(model: MMModel, path: Path) -> None:
    """``model``'s weights from the teacher directory ``path``; one error naming every tensor that
    is missing, unexpected or of another size."""
    state = read_state_dir(path)
    check_state(model, state, f"train.init_from {path}")
    model.load_state_dict(state)


def load_teacher_recipe(name_or_path: str | None = "teacher-easyvqa", overrides=None) -> TeacherRecipe:
    from ..recipe import load_recipe

    return load_recipe(TeacherRecipe, name_or_path, overrides or [])


def teacher_config(r: ModelSection, tokenizer) -> ModelConfig:
    shape = LayerShape(num_heads=r.num_heads, num_kv_heads=r.num_kv_heads, head_dim=r.hidden_size // r.num_heads,
                       intermediate_size=r.intermediate_size, rope_theta=r.rope_theta, max_position_embeddings=4096)
    vision = VisionSettings(image_size=r.image_size, patch_size=r.patch_size, max_tiles=1, use_thumbnail=False,
                            downsample_ratio=r.downsample_ratio)
    return ModelConfig(hidden_size=r.hidden_size, vocab_size=len(tokenizer), num_embed_layers=r.num_embed_layers,
                       num_llm_layers=r.num_llm_layers, embed_layer=shape, llm_layer=shape, vision=vision,
                       img_context_token_id=tokenizer.convert_tokens_to_ids(IMG_CONTEXT),
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id, template="internlm2-chat",
                       tie_word_embeddings=r.tie_embeddings)




def _batch(d: DataSection, step: int, train: EasyVQA, pools, ids: list[int], tokenizer, tpt: int,
           rng: random.Random, keep) -> dict:
    """The batch of ``step``: shape phase, curriculum, comparison phase, then the full mix."""
    shape_phase, grounding = step < d.shape_steps, step < d.shape_steps + d.curriculum_steps
    compare_at = step - d.shape_steps - d.curriculum_steps
    if not grounding and compare_at < d.compare_steps:
        if d.compare_staged:  # one more wording every quarter: colour plain, shape plain, colour negated, ...
            wordings = STAGED_WORDINGS[:1 + 4 * compare_at // d.compare_steps]
        else:
            wordings = PLAIN_WORDINGS if compare_at < d.compare_steps // 2 else ALL_WORDINGS
        return comparison_batch(train, pools, len(ids), tokenizer, tpt, rng, wordings, d.compare_direct,
                                d.augment, d.max_shift)
    return training_batch(train, ids, tokenizer, tpt, 1 if shape_phase else d.max_turns, rng, d.augment,
                          direct_only=grounding, shape_first=d.shape_first, max_shift=d.max_shift,
                          shape_only=shape_phase, keep=keep)


class AttributeHeads(torch.nn.Module):
    """Training-only probes for ``data.attribute_loss``: the named word, the image's colour and shape."""

    def __init__(self, model: MMModel, layer: int):
        super().__init__()
        c, v = model.config.hidden_size, model.config.vocab_size
        self.heads = torch.nn.ModuleList(torch.nn.Linear(c, v) for _ in range(3))
        self.hidden: torch.Tensor | None = None
        model.layers[layer].register_forward_hook(self._keep)

    def _keep(self, module, inputs, output) -> None:
        self.hidden = output

    def loss(self, targets: torch.Tensor) -> torch.Tensor:
        """Summed cross-entropy of the three heads on the hidden state of the last forward."""
        return sum(F.cross_entropy(head(self.hidden).flatten(0, 1), t.flatten(), ignore_index=-100)
                   for head, t in zip(self.heads, targets) if bool((t != -100).any()))


def train_teacher(r: TeacherRecipe, out: str | Path, force: bool = False, log=print,
                  checkpoint: str | Path | None = None) -> dict:
    """Train on the easy-vqa train split, write the model directory ``out``; returns the report
    (test accuracy overall and per question type, also in ``out/train_report.json``)."""
    check_output_dir(Path(out), force)  # fail before training, not after it
    t = r.train
    if t.threads:
        torch.set_num_threads(t.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(t.seed)
    rng = random.Random(t.seed)
    tokenizer = easyvqa_tokenizer()
    config = teacher_config(r.model, tokenizer)
    model = MMModel(config)
    init_weights(model, t.seed)
    if r.model.stem_init == "fan_in":
        fan_in_stem(model, t.seed)
    if t.init_from:
        load_init(model, Path(t.init_from))
    tpt = config.vision.tokens_per_tile
    train, test = EasyVQA("train", config.vision), EasyVQA("test", config.vision)
    probes = AttributeHeads(model, r.data.attribute_layer) if r.data.attribute_loss else None
    params = dict(model.named_parameters())
    if probes is not None:
        params.update({f"attribute_heads.{k}": v for k, v in probes.named_parameters()})
    opt = make_optimizer(params, r.optim)
    schedule = wsd_scheduler(opt, t.steps, r.optim)
    keep = yes_no_balance(train) if r.data.balance_yes_no else None
    pools = comparison_pools(train) if r.data.compare_steps else None
    order: list[int] = []
    history, t0, tokens = [], time.time(), 0
    for step in range(t.steps):
        model.train()
        if len(order) < t.batch_images:
            order += rng.sample(range(len(train.paths)), len(train.paths))
        ids, order = order[:t.batch_images], order[t.batch_images:]
        b = _batch(r.data, step, train, pools, ids, tokenizer, tpt, rng, keep)
        logits = model(b["input_ids"], b["pixel_values"], b["attention_mask"])
        loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), b["labels"][:, 1:].flatten(), ignore_index=-100)
        if r.data.image_word_loss:
            aux = image_word_targets(b["input_ids"], [train.attributes[i] for i in b["image_ids"]], tokenizer,
                                     config.img_context_token_id)
            loss = loss + r.data.image_word_loss * F.cross_entropy(logits.flatten(0, 1), aux.flatten(),
                                                                    ignore_index=-100)
        if probes is not None:
            targets = attribute_targets(b["input_ids"], b["labels"], [train.attributes[i] for i in b["image_ids"]],
                                        tokenizer)
            loss = loss + r.data.attribute_loss * probes.loss(targets)
        lr = schedule.get_last_lr()[0]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if r.optim.grad_clip:
            torch.nn.utils.clip_grad_norm_(list(params.values()), r.optim.grad_clip)
        opt.step()
        schedule.step()
        tokens += int(b["attention_mask"].sum())
        if (step + 1) % 50 == 0:
            elapsed = time.time() - t0
            log(f"step {step + 1}/{t.steps} loss {loss.item():.4f} lr {lr:.2e} {tokens / elapsed:.0f} tok/s "
                f"ETA {elapsed / (step + 1) * (t.steps - step - 1) / 60:.1f} min")
        if t.eval_every and (step + 1) % t.eval_every == 0 and step + 1 < t.steps:
            by_type: dict = {}
            acc = first_token_accuracy(model, test, tokenizer, tpt, limit=t.eval_limit, by_type=by_type)
            history.append({"step": step + 1, "test_accuracy_subset": acc, "by_type": by_type, "loss": loss.item()})
            log(f"step {step + 1}: test accuracy (first {t.eval_limit}) {acc:.4f} {by_type}")
            if checkpoint is not None:
                torch.save(model.state_dict(), checkpoint)
    by_type = {}
    acc = first_token_accuracy(model, test, tokenizer, tpt, by_type=by_type)
    train_acc = first_token_accuracy(model, train, tokenizer, tpt, limit=5000)
    report = {"test_accuracy": acc, "test_accuracy_by_type": by_type, "test_questions": len(test.questions),
              "train_accuracy_first5000": train_acc, "params": model.num_params(), "steps": t.steps,
              "train_seconds": round(time.time() - t0, 1), "history": history, "recipe": dataclasses.asdict(r),
              "git_sha": git_sha(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    log(f"test accuracy {acc:.4f} {by_type} on {len(test.questions)} questions ({model.num_params()} params)")
    with atomic_dir(out, force) as tmp:
        tokenizer.save_pretrained(str(tmp))
        write_model_files(tmp, config, model.state_dict(), extra_json={"train_report.json": report})
    return report
