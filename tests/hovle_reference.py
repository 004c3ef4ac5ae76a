"""An independent writer and plain-PyTorch forward of the HoVLE / released mmMamba layouts.

Written from the published config fields and tensor names (SPEC sections 1 and 7), without
our model, our maps or our config code, so tests against it can catch errors in all three.
The Mamba recurrence runs token by token; attention is written out with an explicit mask.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F

# tiny sizes: hidden 32, 4 query heads over 2 KV heads of 8, 2 + 2 layers, 16x16-pixel tiles
HIDDEN, HEADS, KV, HEAD_DIM, FFN = 32, 4, 2, 8, 48
N_EMB, N_LLM = 2, 2
TEXT_VOCAB, IMAGE, PATCH, IMG_TOKEN = 50, 16, 4, 7
TOKENS_PER_TILE = (IMAGE // PATCH) ** 2 // 4


def hovle_config(special: int = 0, blocks: list[str] | None = None, **top) -> dict:
    """HoVLE's config.json; with ``blocks`` (one 'mamba2'|'mha' per global layer) the released one."""
    layer = {"hidden_size": HIDDEN, "num_attention_heads": HEADS, "num_key_value_heads": KV,
             "intermediate_size": FFN, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
             "max_position_embeddings": 512, "hidden_act": "silu"}
    emb = dict(layer, num_hidden_layers=N_EMB, model_type="holistic_embedding", llm_vocab_size=TEXT_VOCAB,
               llm_hidden_size=HIDDEN, image_size=IMAGE, patch_size=PATCH, num_channels=3, downsample_ratio=0.5,
               img_context_token_id=IMG_TOKEN, pixel_shuffle_loc="pre", use_pixel_shuffle_proj=True,
               use_ls=False, special_token_maps={f"<sp{i}>": TEXT_VOCAB + i for i in range(special)})
    llm = dict(layer, num_hidden_layers=N_LLM, model_type="internlm2", architectures=["InternLM2ForCausalLM"],
               vocab_size=TEXT_VOCAB + special, bias=False, bos_token_id=1, pad_token_id=2)
    d = {"model_type": "hovle", "embedding_config": emb, "llm_config": llm, "template": "internlm2-chat",
         "downsample_ratio": 0.5, "force_image_size": IMAGE, "max_dynamic_patch": 1, "use_thumbnail": False,
         "eos_token_id": 2}
    if blocks is not None:
        d["model_type"] = "mmMamba_chat"
        emb.update(model_type="mmMamba_embedding", layers_block_type=blocks[:N_EMB])
        llm.update(model_type="mmMamba", architectures="mmMambaForCausalLM", layers_block_type=blocks[N_EMB:])
    d.update(top)
    return d


def random_tensors(config: dict, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under the layout's names (released Mamba layers where blocks say 'mamba2')."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1):
        return torch.randn(*shape, generator=g) * scale

    emb, llm = config["embedding_config"], config["llm_config"]
    blocks = emb.get("layers_block_type", ["mha"] * N_EMB) + llm.get("layers_block_type", ["mha"] * N_LLM)
    grid = IMAGE // PATCH
    t = {
        "embedding_model.vision_embeddings.patch_embedding.weight": r(HIDDEN, 3, PATCH, PATCH),
        "embedding_model.vision_embeddings.patch_embedding.bias": r(HIDDEN),
        "embedding_model.vision_embeddings.position_embedding": r(1, grid * grid + 1, HIDDEN),
        "embedding_model.vision_embeddings.class_embedding": r(1, 1, HIDDEN),
        "embedding_model.pixel_shuffle_proj.0.weight": r(HIDDEN, 4 * HIDDEN),
        "embedding_model.pixel_shuffle_proj.0.bias": r(HIDDEN),
        "embedding_model.pixel_shuffle_proj.2.weight": r(HIDDEN, HIDDEN),
        "embedding_model.pixel_shuffle_proj.2.bias": r(HIDDEN),
        "embedding_model.llm_text_embeddings.weight": r(TEXT_VOCAB, HIDDEN, scale=1.0),
        "language_model.model.tok_embeddings.weight": r(llm["vocab_size"], HIDDEN),
        "language_model.model.norm.weight": 1 + r(HIDDEN),
        "language_model.output.weight": r(llm["vocab_size"], HIDDEN),
    }
    n_special = len(emb["special_token_maps"])
    if n_special:
        t["embedding_model.special_text_embeddings.weight"] = r(n_special, HIDDEN, scale=1.0)
    for i, kind in enumerate(blocks):
        p = f"embedding_model.encoder.{i}." if i < N_EMB else f"language_model.model.layers.{i - N_EMB}."
        t[p + "attention_norm.weight"] = 1 + r(HIDDEN)
        t[p + "ffn_norm.weight"] = 1 + r(HIDDEN)
        t[p + "feed_forward.w1.weight"] = r(FFN, HIDDEN)
        t[p + "feed_forward.w3.weight"] = r(FFN, HIDDEN)
        t[p + "feed_forward.w2.weight"] = r(HIDDEN, FFN)
        if kind == "mha":
            t[p + "attention.wqkv.weight"] = r((HEADS + 2 * KV) * HEAD_DIM, HIDDEN, scale=0.3)
            t[p + "attention.wo.weight"] = r(HIDDEN, HEADS * HEAD_DIM)
            continue
        rows = 2 * KV * HEAD_DIM + 2 * HEADS * HEAD_DIM + HEADS
        channels = 2 * KV * HEAD_DIM + HEADS * HEAD_DIM
        t[p + "attention.wvkqgdt.weight"] = r(rows, HIDDEN, scale=0.3)
        t[p + "attention.conv1d.weight"] = r(channels, 1, 2, scale=0.5) + torch.tensor([0.0, 1.0])
        t[p + "attention.conv1d.bias"] = r(channels)
        t[p + "attention.A_log_bias"] = r(HEADS, scale=0.5)
        t[p + "attention.dt_bias"] = r(HEADS, scale=0.5) - 1.0
        t[p + "attention.g_norm_swish_gate.weight"] = 1 + r(HEAD_DIM)
        t[p + "attention.o_proj.weight"] = r(HIDDEN, HEADS * HEAD_DIM)
    return t


def write_dir(directory: Path, config: dict, tensors: dict[str, torch.Tensor], shards: int = 2) -> Path:
    """config.json + HF-style shards + index, the way save_pretrained lays them out."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    names, weight_map = sorted(tensors), {}
    for i in range(shards):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: tensors[k].contiguous() for k in names[i::shards]}
        save_file(part, str(directory / fname), metadata={"format": "pt"})
        weight_map.update({k: fname for k in part})
    (directory / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return directory


def inputs(config: dict, with_image: bool = True, seed: int = 0):
    """input_ids (1, L) with special ids when the table exists, and one tile of pixels."""
    g = torch.Generator().manual_seed(seed)
    vocab = config["llm_config"]["vocab_size"]
    ids = torch.randint(10, vocab, (9,), generator=g)
    if vocab > TEXT_VOCAB:
        ids[1], ids[-2] = TEXT_VOCAB, vocab - 1  # first and last special rows
    if not with_image:
        return ids[None], None
    ids = torch.cat([ids[:3], torch.full((TOKENS_PER_TILE,), IMG_TOKEN), ids[3:]])
    return ids[None], torch.randn(1, 3, IMAGE, IMAGE, generator=g)


# ---- the forward ---------------------------------------------------------------------------
def _rms(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def _vision(t, pixels):
    pre = "embedding_model.vision_embeddings."
    x = F.conv2d(pixels, t[pre + "patch_embedding.weight"], t[pre + "patch_embedding.bias"], stride=PATCH)
    n, c, gh, gw = x.shape
    x = x.flatten(2).transpose(1, 2) + t[pre + "position_embedding"][:, 1:]  # class slot unused
    # 2x2 space-to-depth: token (a, b) -> token (a//2, b//2), channel block 2*(a%2) + (b%2)
    x = x.view(n, gh // 2, 2, gw // 2, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(n, gh * gw // 4, 4 * c)
    p = "embedding_model.pixel_shuffle_proj."
    x = F.gelu(x @ t[p + "0.weight"].T + t[p + "0.bias"])
    return x @ t[p + "2.weight"].T + t[p + "2.bias"]


def _rope(x, pos, c):
    """InternLM2's rotary embedding: plain, linear (positions / factor) or dynamic NTK (base grown
    with the sequence length once it passes max_position_embeddings)."""
    d, theta, scaling = x.shape[-1], c["rope_theta"], c.get("rope_scaling") or {}
    factor, length, most = scaling.get("factor", 1.0), len(pos), c["max_position_embeddings"]
    if scaling.get("type") == "dynamic" and length > most:
        theta = theta * ((factor * length / most) - (factor - 1)) ** (d / (d - 2))
    inv = 1.0 / theta ** (torch.arange(0, d, 2).float() / d)
    t = pos.float() / factor if scaling.get("type") == "linear" else pos.float()
    ang = t[:, None] * inv[None]  # (l, d/2)
    cos, sin = torch.cat([ang.cos()] * 2, -1)[:, None], torch.cat([ang.sin()] * 2, -1)[:, None]  # (l, 1, d)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _attention(t, p, u, c):
    l = u.shape[0]
    g = HEADS // KV
    w = t[p + "attention.wqkv.weight"].view(KV, g + 2, HEAD_DIM, HIDDEN)
    q = torch.einsum("kgdc,lc->lkgd", w[:, :g], u).reshape(l, HEADS, HEAD_DIM)
    k = torch.einsum("kdc,lc->lkd", w[:, g], u)
    v = torch.einsum("kdc,lc->lkd", w[:, g + 1], u)
    pos = torch.arange(l)
    q, k = _rope(q, pos, c), _rope(k, pos, c)
    out = torch.empty(l, HEADS, HEAD_DIM)
    causal = torch.ones(l, l).tril().bool()
    for h in range(HEADS):
        s = (q[:, h] @ k[:, h // g].T) / math.sqrt(HEAD_DIM)
        out[:, h] = s.masked_fill(~causal, float("-inf")).softmax(-1) @ v[:, h // g]
    return out.reshape(l, -1) @ t[p + "attention.wo.weight"].T


def _mamba(t, p, u):
    l = u.shape[0]
    g = HEADS // KV
    kv, qd = KV * HEAD_DIM, HEADS * HEAD_DIM
    proj = u @ t[p + "attention.wvkqgdt.weight"].T
    v, k, q, gate, dt = proj.split([kv, kv, qd, qd, HEADS], -1)
    xs = torch.cat([v, k, q], -1)  # (l, ch)
    cw, cb = t[p + "attention.conv1d.weight"][:, 0], t[p + "attention.conv1d.bias"]
    prev = torch.cat([torch.zeros(1, xs.shape[1]), xs[:-1]], 0)
    xs = F.silu(prev * cw[:, 0] + xs * cw[:, 1] + cb)
    v, k, q = xs.split([kv, kv, qd], -1)
    v, k, q = v.view(l, KV, HEAD_DIM), k.view(l, KV, HEAD_DIM), q.view(l, HEADS, HEAD_DIM)
    dt = F.softplus(dt + t[p + "attention.dt_bias"])  # (l, H)
    A = -torch.exp(t[p + "attention.A_log_bias"])
    y = torch.empty(l, HEADS, HEAD_DIM)
    for h in range(HEADS):
        S = torch.zeros(HEAD_DIM, HEAD_DIM)  # (value dim, key dim)
        for s in range(l):
            S = torch.exp(dt[s, h] * A[h]) * S + dt[s, h] * torch.outer(v[s, h // g], k[s, h // g])
            y[s, h] = S @ q[s, h]
    y = _rms(y, t[p + "attention.g_norm_swish_gate.weight"], 1e-5) * F.silu(gate.view(l, HEADS, HEAD_DIM))
    return y.reshape(l, -1) @ t[p + "attention.o_proj.weight"].T


def reference_logits(config: dict, t: dict[str, torch.Tensor], ids: torch.Tensor, pixels=None) -> torch.Tensor:
    """(1, L) ids (+ one tile) -> (1, L, llm vocab_size) logits, fp32, HoVLE / released math."""
    emb, llm = config["embedding_config"], config["llm_config"]
    blocks = emb.get("layers_block_type", ["mha"] * N_EMB) + llm.get("layers_block_type", ["mha"] * N_LLM)
    ids = ids[0]
    text_rows = t["embedding_model.llm_text_embeddings.weight"].shape[0]
    h = torch.stack([t["embedding_model.llm_text_embeddings.weight"][i] if i < text_rows
                     else t["embedding_model.special_text_embeddings.weight"][i - text_rows] for i in ids.tolist()])
    if pixels is not None:
        h[ids == IMG_TOKEN] = _vision(t, pixels).reshape(-1, HIDDEN)
    for i, kind in enumerate(blocks):
        c = emb if i < N_EMB else llm
        p = f"embedding_model.encoder.{i}." if i < N_EMB else f"language_model.model.layers.{i - N_EMB}."
        u = _rms(h, t[p + "attention_norm.weight"], c["rms_norm_eps"])
        h = h + (_attention(t, p, u, c) if kind == "mha" else _mamba(t, p, u))
        u = _rms(h, t[p + "ffn_norm.weight"], c["rms_norm_eps"])
        w1, w2, w3 = (t[p + f"feed_forward.w{j}.weight"] for j in (1, 2, 3))
        h = h + (F.silu(u @ w1.T) * (u @ w3.T)) @ w2.T
    h = _rms(h, t["language_model.model.norm.weight"], llm["rms_norm_eps"])
    return (h @ t["language_model.output.weight"].T)[None]
