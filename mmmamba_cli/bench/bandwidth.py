"""The memory-bandwidth floor of a decode step: bytes that must be read per token / bandwidth.

A batch-1 decode step reads every weight that touches the token once (all layers, the final
norm and the output head; one embedding row; not the vision stem), each Mamba layer's conv and
SSM state (read and written back), and, for attention layers, the keys and values of the whole
context. Dividing by the card's bandwidth gives the fastest possible step on that card.
"""
from __future__ import annotations

from ..model.cache import state_bytes
from ..model.model import MMModel

# substring of torch.cuda.get_device_name -> bytes/s (vendor figures); most specific first
CARD_BANDWIDTH: tuple[tuple[str, float], ...] = (
    ("H200", 4.8e12),
    ("H100 NVL", 3.9e12),
    ("H100 PCIe", 2.0e12),
    ("H100", 3.35e12),  # SXM / "H100 80GB HBM3"
    ("GH200", 4.0e12),
    ("A100-SXM4-80GB", 2.039e12),
    ("A100 80GB PCIe", 1.935e12),
    ("A100", 1.555e12),
    ("L40S", 0.864e12),
    ("RTX 4090", 1.008e12),
    ("A10G", 0.6e12),
)


def card_bandwidth(name: str) -> float | None:
    for key, bw in CARD_BANDWIDTH:
        if key in name:
            return bw
    return None


def decode_bytes(model: MMModel, context: int) -> int:
    """Bytes a batch-1 decode step must move at ``context`` cached tokens."""
    c = model.config
    weights = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                  if not n.startswith("embed."))
    if c.tie_word_embeddings:  # the head is the embedding table, listed under embed.
        weights += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
    elt = model.lm_head.weight.element_size()
    weights += c.hidden_size * elt  # one embedding row
    sizes = state_bytes(c, elt)
    # the KV of the whole context is read; Mamba states are read and written back
    return weights + sizes["kv_per_token"] * context + 2 * (sizes["conv"] + sizes["ssm"])

