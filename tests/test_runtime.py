"""The decode step and the runtime: MMModel.step == the full forward; runtime generate == a plain
forward-per-token loop; beams reorder the cache; streaming adds up to the answer."""
from __future__ import annotations

import pytest
import torch

from conftest import image_inputs, tiny_teacher
from test_model import MODELS
from mmmamba_cli.runtime import SamplingSettings, TextWatch, cut_at, generate, make_decoder

torch.set_num_threads(1)


def left_padded(model, pads=(0, 3)):
    """Two image prompts, row i left-padded with pads[i] garbage ids (masked)."""
    ids, pix = image_inputs(model.config, batch=2, text_len=10)
    rows, masks, width = [], [], ids.shape[1] + max(pads)
    for row, p in zip(ids, pads):
        lead = width - ids.shape[1]
        rows.append(torch.cat([torch.full((lead,), 77), row]))
        masks.append(torch.cat([torch.zeros(lead), torch.ones(ids.shape[1])]))
    return torch.stack(rows), pix, torch.stack(masks).long()


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", list(MODELS))
def test_step_after_prefill_equals_full_forward(kind, fused):
    model = MODELS[kind](tiny_teacher()).fuse_for_decode(fused)
    ids, pix, mask = left_padded(model, pads=(0, 3))
    ids[1, :3] = 77
    mask[1, :3] = 0
    n_prefill = ids.shape[1] - 6
    with torch.no_grad():
        full = model(ids, pix, attention_mask=mask)  # (2, L, V)
        cache = model.new_cache(2, capacity=ids.shape[1])
        first = model(ids[:, :n_prefill], pix, attention_mask=mask[:, :n_prefill], cache=cache)
        steps = [model.step(ids[:, t], cache) for t in range(n_prefill, ids.shape[1])]
    real = mask[:, :n_prefill].bool()
    assert (first[real] - full[:, :n_prefill][real]).abs().max().item() < 1e-5
    got = torch.stack(steps, 1)
    scale = max(1.0, full.abs().max().item())  # fp32 rounding grows with the logits' size
    assert (got - full[:, n_prefill:]).abs().max().item() < 1e-5 * scale
    assert cache.seen == ids.shape[1] and cache.next_pos.tolist() == mask.sum(1).tolist()


def test_step_grows_a_small_cache():
    model = MODELS["hybrid"](tiny_teacher())
    ids, pix = image_inputs(model.config, batch=1, text_len=8)
    with torch.no_grad():
        full = model(ids, pix)
        cache = model.new_cache(1, capacity=ids.shape[1] - 4)
        model(ids[:, :-4], pix, cache=cache)
        got = torch.stack([model.step(ids[:, t], cache) for t in range(ids.shape[1] - 4, ids.shape[1])], 1)
    assert (got - full[:, -4:]).abs().max().item() < 1e-5


def reference_generate(model, ids, pix, mask, n, eos=None):
    """Generation as the library did it before the runtime: one forward with the cache per token."""
    cache = model.new_cache(ids.shape[0], capacity=ids.shape[1] + n)
    out, done = [[] for _ in range(ids.shape[0])], [False] * ids.shape[0]
    with torch.no_grad():
        logits = model(ids, pix, mask, cache=cache, logits_to_keep=1)[:, -1]
        for _ in range(n):
            nxt = logits.argmax(-1)
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    done[i] = t == eos
                    if not done[i]:
                        out[i].append(t)
            if all(done):
                break
            logits = model(nxt[:, None], cache=cache)[:, -1]
    return out


@pytest.mark.parametrize("kind", list(MODELS))
def test_runtime_greedy_tokens_equal_the_forward_loop(kind):
    model = MODELS[kind](tiny_teacher())
    ids, pix, mask = left_padded(model, pads=(0, 4))
    want = reference_generate(model, ids, pix, mask, 12)
    got = generate(model, ids, pix, mask, SamplingSettings(max_new_tokens=12, eos_token_id=-1))
    assert got == want and len(got[0]) == 12
    # an EOS the model does produce ends each row there
    eos = want[1][5]
    got = generate(model, ids, pix, mask, SamplingSettings(max_new_tokens=12, eos_token_id=eos))
    assert got == reference_generate(model, ids, pix, mask, 12, eos=eos)
    assert len(got[1]) <= 5


def test_sampling_is_seeded_and_respects_top_p():
    model = MODELS["linear"](tiny_teacher())
    ids, pix = image_inputs(model.config, batch=2)
    s = SamplingSettings(max_new_tokens=6, temperature=1.0, top_p=0.9, eos_token_id=-1, seed=3)
    assert generate(model, ids, pix, settings=s) == generate(model, ids, pix, settings=s)
    tiny = SamplingSettings(max_new_tokens=6, temperature=1.0, top_p=1e-6, eos_token_id=-1, seed=3)
    greedy = SamplingSettings(max_new_tokens=6, eos_token_id=-1)
    assert generate(model, ids, pix, settings=tiny) == generate(model, ids, pix, settings=greedy)


@pytest.mark.parametrize("kind", ["linear", "hybrid"])
def test_reorder_keeps_each_rows_state(kind):
    """Beam search: after reordering rows, each row continues exactly as the row it copied."""
    model = MODELS[kind](tiny_teacher())
    ids, pix = image_inputs(model.config, batch=3, text_len=6, seed=1)
    nxt = torch.tensor([11, 12, 13])
    index = torch.tensor([2, 2, 0])
    with torch.no_grad():
        a = model.new_cache(3, capacity=ids.shape[1] + 2)
        model(ids, pix, cache=a)
        want = model.step(nxt, a)[index]
        b = model.new_cache(3, capacity=ids.shape[1] + 2)
        model(ids, pix, cache=b)
        tensors = [t.data_ptr() for s in b.layers for t in vars(s).values() if isinstance(t, torch.Tensor)]
        b.reorder(index)
        got = model.step(nxt[index], b)
    assert (got - want).abs().max().item() < 1e-6
    assert tensors == [t.data_ptr() for s in b.layers for t in vars(s).values() if isinstance(t, torch.Tensor)]


def test_reset_serves_a_new_prompt_from_the_same_tensors():
    model = MODELS["hybrid"](tiny_teacher())
    ids, pix = image_inputs(model.config, batch=1)
    cache = model.new_cache(1, capacity=ids.shape[1] + 4)
    with torch.no_grad():
        model(ids[:, :5], cache=cache)
        model.step(ids[:, 0], cache)
        cache.reset()
        got = model(ids, pix, cache=cache)
        assert (got - model(ids, pix)).abs().max().item() < 1e-5
        dec = make_decoder(model, cache)  # plain step on a CPU
        assert dec.kind == "eager"


def test_fusion_is_reversible_and_follows_weight_changes():
    model = MODELS["hybrid"](tiny_teacher())
    names = sorted(model.state_dict())
    model.fuse_for_decode()
    assert sorted(model.state_dict()) == names  # the fused copies are not parameters
    ids, pix = image_inputs(model.config)
    want = generate(model, ids, pix, settings=SamplingSettings(max_new_tokens=4, eos_token_id=-1))
    with torch.no_grad():
        model.layers[0].mixer.q_proj.weight.mul_(3.0)  # an in-place change: the copy is stale
    model.fuse_for_decode()
    assert torch.equal(model.layers[0].mixer.fused.weight[:model.layers[0].mixer.q_proj.weight.shape[0]],
                       model.layers[0].mixer.q_proj.weight)
    model.fuse_for_decode(False)
    assert all(layer.mixer.fused is None and layer.mlp.fused is None for layer in model.layers)
    assert want  # generation ran through the fused step


class WordTok:
    """Decodes ids to words (id 9: ' sto', id 10: 'p'), enough to test the stream."""

    def decode(self, ids, skip_special_tokens=True):
        return "".join({9: " sto", 10: "p"}.get(i, f" w{i}") for i in ids)


def test_stream_adds_up_to_the_answer_and_stops_at_stop_strings():
    pieces = []
    watch = TextWatch(WordTok(), 1, stops=[" stop"], stream=pieces.append, eos_token_id=2)
    for t in [5, 6, 9, 10, 7]:
        if watch([t])[0]:
            break
    watch.finish()
    assert watch.text(0) == " w5 w6" and "".join(pieces) == " w5 w6"
    pieces.clear()
    watch = TextWatch(WordTok(), 1, stream=pieces.append, eos_token_id=2)
    for t in [5, 9, 6, 2, 8]:
        if watch([t])[0]:
            break
    watch.finish()
    assert "".join(pieces) == watch.text(0) == " w5 sto w6"
    assert cut_at("abc</s>def", ["</s>"]) == "abc"


def test_generate_cli_streams_the_same_text(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from test_eval_support import save, word_tokenizer
    from mmmamba_cli.cli.main import app
    from mmmamba_cli.runtime.chat import answer

    d = save(MODELS["linear"](tiny_teacher()), tmp_path / "m", word_tokenizer())
    text = answer(d, "what is the blue shape?", max_new_tokens=8)
    r = CliRunner().invoke(app, ["generate", str(d), "-p", "what is the blue shape?", "--max-new-tokens", "8"])
    assert r.exit_code == 0, r.output
    assert r.output.strip() == text.strip()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("kind", list(MODELS))
def test_cuda_graph_generate_equals_plain_generate(kind):
    model = MODELS[kind](tiny_teacher()).cuda()
    ids, pix, mask = (t.cuda() for t in left_padded(model, pads=(0, 4)))
    s = SamplingSettings(max_new_tokens=10, eos_token_id=-1)
    assert generate(model, ids, pix, mask, s, graphs="on") == generate(model, ids, pix, mask, s, graphs="off")
