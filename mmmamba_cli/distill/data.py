"""Glue to :mod:`mmmamba_cli.data`: the data file, the tokenizer, and a deterministic batch plan.

The batch plan makes the data position a function of the step alone: step s uses items
``order[s*G : (s+1)*G]`` of an endless sequence of seeded shuffles; they are cut into micro-batches
of ``micro_batch`` and micro-batch c goes to process ``c % world``. So a resumed run sees exactly
the batches an uninterrupted one would, and the global batch is the same for any process count.
"""
from __future__ import annotations

import functools
import time
from pathlib import Path

import torch

from ..data import (IndexSettings, RecordError, build_index, collate, index_dir, open_index, pack,
                    write_easyvqa_jsonl)
from ..errors import UserError
from .schema import DataSection

EASYVQA_PREFIX = "easyvqa:"


def resolve_data_path(spec: str | None, data_dir: Path, is_main: bool = True) -> Path:
    """The data file or directory of ``spec``; ``easyvqa:SPLIT`` (or ``easyvqa:SPLIT:N``, N questions
    evenly spaced over the split) is written once into ``data_dir``."""
    if not spec:
        raise UserError("no training data: pass --data FILE.jsonl or --data easyvqa:train, or a recipe that "
                        "sets data.path (e.g. --recipe easyvqa)")
    if spec.startswith(EASYVQA_PREFIX):
        split, _, count = spec[len(EASYVQA_PREFIX):].partition(":")
        if split not in ("train", "test"):
            raise UserError(f"data {spec!r}: the easy-vqa splits are train and test")
        if count and not (count.isdigit() and int(count) > 0):
            raise UserError(f"data {spec!r}: the question count after the split must be a positive integer")
        path = Path(data_dir) / f"easyvqa-{split}{'-' + count if count else ''}.jsonl"
        if is_main and not path.exists():
            write_easyvqa_jsonl(split, path, int(count) if count else None)
        return path
    path = Path(spec)
    if not path.exists():
        raise UserError(f"data file {path} not found")
    return path


def load_dataset(path: Path, data: DataSection, tokenizer, config, cache_dir: Path, accelerator=None, log=None):
    """(SFTDataset, LoadStats) from the data index in ``cache_dir``: the main process builds it unless
    it is there, the others wait and open it. Unreadable records are skipped and counted, or stop the
    run under strict."""
    settings = IndexSettings(data.image_root, data.max_length, data.long_text, data.strict)
    main = accelerator is None or accelerator.is_main_process
    t0 = time.perf_counter()
    try:
        failure = None
        if main:
            try:
                build_index(path, tokenizer, config, settings, cache_dir, data.num_proc, log)
            except (RecordError, ValueError) as e:  # let the others pass the barrier, then stop
                failure = e
        if accelerator is not None:
            accelerator.wait_for_everyone()
        if failure is not None:
            raise failure
        directory = index_dir(path, tokenizer, config, settings, cache_dir)
        if not (directory / "stats.json").exists():
            raise UserError(f"{path}: the main process did not build the data index {directory}")
        dataset, stats = open_index(directory, config)
    except RecordError as e:
        raise UserError(f"{path}: {e} (--strict)") from None
    except ValueError as e:  # e.g. tokenizer and model disagree on <IMG_CONTEXT>
        raise UserError(f"{path}: {e}") from None
    if log is not None:
        log(f"{stats.summary()} ({stats.tokens} tokens; index {directory.name} ready in "
            f"{time.perf_counter() - t0:.1f} s)" + ("; " + "; ".join(stats.messages) if stats.messages else ""))
    if not len(dataset):
        raise UserError(f"{path}: no usable record ({stats.summary()})")
    return dataset, stats


class BatchPlan:
    """Which dataset items form each micro-batch of each step, for one process."""

    def __init__(self, num_items: int, global_batch: int, micro_batch: int, world: int, seed: int):
        if global_batch % (micro_batch * world):
            raise UserError(f"train.global_batch {global_batch} is not a multiple of train.micro_batch "
                            f"{micro_batch} x {world} process(es)")
        self.n, self.global_batch, self.micro_batch, self.world, self.seed = \
            num_items, global_batch, micro_batch, world, seed
        self.accum = global_batch // (micro_batch * world)

    @functools.lru_cache(maxsize=4)
    def order(self, epoch: int) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def step_items(self, step: int) -> list[int]:
        """The global batch of ``step`` (0-based)."""
        start = step * self.global_batch
        return [self.order(k // self.n)[k % self.n] for k in range(start, start + self.global_batch)]

    def micro_batches(self, step: int, rank: int) -> list[list[int]]:
        items = self.step_items(step)
        chunks = [items[i:i + self.micro_batch] for i in range(0, len(items), self.micro_batch)]
        return chunks[rank::self.world]


class PlanSampler(torch.utils.data.Sampler):
    """Batch sampler: the micro-batches of one process from ``start`` to ``stop`` (steps)."""

    def __init__(self, plan: BatchPlan, start: int, stop: int, rank: int):
        self.plan, self.start, self.stop, self.rank = plan, start, stop, rank

    def __iter__(self):
        for step in range(self.start, self.stop):
            yield from self.plan.micro_batches(step, self.rank)

    def __len__(self) -> int:
        return (self.stop - self.start) * self.plan.accum


def make_loader(dataset, plan: BatchPlan, start: int, stop: int, rank: int, pad_token_id: int, num_workers: int,
                pack_length: int | None = None):
    """This process's micro-batches; ``pack_length``: each micro-batch's records packed into rows of
    up to that many tokens (``data.pack``), which changes the padding, not the records or the losses."""
    fn = functools.partial(collate, pad_token_id=pad_token_id, padding_side="right") if pack_length is None \
        else functools.partial(pack, pad_token_id=pad_token_id, max_length=pack_length)
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=PlanSampler(plan, start, stop, rank), num_workers=num_workers, collate_fn=fn)
