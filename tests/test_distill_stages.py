"""Stages as data: trainable sets (SPEC table), weight-decay groups, WSD schedule, batch plan."""
from __future__ import annotations

import pytest
import torch

from conftest import tiny_teacher
from mmmamba_cli.distill.data import BatchPlan
from mmmamba_cli.model.optim import make_optimizer, wsd_factor, wsd_scheduler
from mmmamba_cli.distill.schema import OptimSection
from mmmamba_cli.distill.stages import STAGES
from mmmamba_cli.errors import UserError
from mmmamba_cli.model import MMModel
from mmmamba_cli.model.layout import layer_types_for
from mmmamba_cli.seed import seed_state

torch.set_num_threads(1)  # the CPU is shared: more threads are much slower here

# SPEC section 3, per Mamba layer, written out by hand
STAGE1 = {"conv1d.weight", "conv1d.bias", "dt_proj.weight", "dt_bias", "A_log", "z_proj.weight", "norm.weight"}
STAGE2 = STAGE1 | {"C_proj.weight", "B_proj.weight", "x_proj.weight"}
STAGE3 = {"C_proj.weight", "B_proj.weight", "x_proj.weight", "conv1d.weight", "conv1d.bias", "dt_proj.weight",
          "z_proj.weight", "norm.weight"}


def hybrid_student(attn=(1,)):
    t = tiny_teacher()
    cfg, sd, _ = seed_state(t.config, t.state_dict(), layer_types_for(list(attn), t.config.num_layers))
    m = MMModel(cfg)
    m.load_state_dict(sd)
    return m


@pytest.mark.parametrize("n, expected", [(1, STAGE1), (2, STAGE2), (3, STAGE3)])
def test_trainable_parameters_are_exactly_the_spec_table(n, expected):
    m = hybrid_student(attn=(1,))
    names = set(STAGES[n].trainable(m))
    mamba = [i for i in range(m.config.num_layers) if i != 1]
    assert names == {f"layers.{i}.mixer.{p}" for i in mamba for p in expected}
    # never: kept attention layers, W_O, MLPs, norms outside the mixer, embeddings, head
    assert not any(k.startswith("layers.1.") or "out_proj" in k or "mlp" in k or "_norm" in k for k in names)


def test_recipe_roles_replace_the_stage_set_and_unknown_roles_are_refused():
    from mmmamba_cli.distill.schema import resolve_recipe

    m = hybrid_student(attn=(1,))
    r = resolve_recipe(STAGES[3], None, ["train.trains=[out_proj,A_log]"])
    names = set(STAGES[3].with_roles(r.train.trains).trainable(m))
    assert names == {f"layers.{i}.mixer.{p}" for i in range(m.config.num_layers) if i != 1
                     for p in ("out_proj.weight", "A_log")}
    assert STAGES[3].with_roles(None) is STAGES[3]
    with pytest.raises(UserError, match="unknown Mamba-2 role.*mlp"):
        resolve_recipe(STAGES[3], None, ["train.trains=[mlp]"])


def test_stage_table_sources_objectives_and_paper_defaults():
    assert [(s.source, s.objective) for s in STAGES.values()] == [
        ("seed", "layerwise"), ("stage1", "layerwise"), ("stage2", "kl")]
    assert [(s.defaults["optim"]["lr"], s.defaults["train"]["global_batch"]) for s in STAGES.values()] == [
        (1e-3, 128), (5e-4, 128), (5e-5, 64)]


def test_no_weight_decay_on_biases_A_log_dt_bias_and_norms():
    m = hybrid_student()
    params = STAGES[2].trainable(m)
    opt = make_optimizer(params, OptimSection(weight_decay=0.05))
    by_id = {id(p): name for name, p in params.items()}
    decayed = {by_id[id(p)].split("mixer.")[1] for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    plain = {by_id[id(p)].split("mixer.")[1] for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert decayed == {"conv1d.weight", "dt_proj.weight", "z_proj.weight", "C_proj.weight", "B_proj.weight",
                       "x_proj.weight"}
    assert plain == {"conv1d.bias", "dt_bias", "A_log", "norm.weight"}


def test_wsd_warms_up_holds_and_really_decays_at_the_actual_end():
    total = 50
    f = [wsd_factor(s, total, 0.1, 0.1, 0.0) for s in range(total)]
    assert f[:5] == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert set(f[5:45]) == {1.0}
    assert all(a > b for a, b in zip(f[44:], f[45:])) and 0 < f[-1] < 0.2
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = wsd_scheduler(opt, total, OptimSection(lr=1e-3, min_lr_ratio=0.1))
    lrs = []
    for _ in range(total):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(2e-4) and lrs[20] == pytest.approx(1e-3)
    assert lrs[-1] < 2.6e-4 and sched.get_last_lr()[0] == pytest.approx(1e-4)  # reaches min right after the end


def test_batch_plan_global_batch_is_independent_of_the_process_split():
    one = BatchPlan(10, global_batch=8, micro_batch=2, world=1, seed=3)
    two = BatchPlan(10, global_batch=8, micro_batch=2, world=2, seed=3)
    assert (one.accum, two.accum) == (4, 2)
    for step in range(4):
        a = one.micro_batches(step, 0)
        b = sorted(two.micro_batches(step, 0) + two.micro_batches(step, 1))
        assert sorted(a) == b and sum(map(len, a)) == 8
    seen = [i for s in range(5) for i in one.step_items(s)][:40]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))  # epochs are permutations
    assert one.step_items(2) == BatchPlan(10, 8, 2, 1, 3).step_items(2)  # a pure function of the step
    with pytest.raises(UserError, match="not a multiple"):
        BatchPlan(10, global_batch=6, micro_batch=2, world=2, seed=0)
