"""A tiny word-level tokenizer for tests and demos (e.g. easy-vqa), in the standard HF format.

Text is lowercased and split on whitespace and punctuation (each punctuation mark is a word), so
the template's ``\\n`` simply disappears. Special tokens are matched before that and never split.
Decoding joins words with single spaces. No BOS/EOS is added on encoding.
"""
from __future__ import annotations

from collections.abc import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers

from .template import IM_END, IM_START, IMG_CONTEXT, IMG_END, IMG_START

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
# ids 0..8 in this order (<IMG_CONTEXT> is 5, as in the "tiny" model preset)
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, IMG_START, IMG_CONTEXT, IMG_END, IM_START, IM_END)
TEMPLATE_WORDS = ("system", "user", "assistant")


def build_word_tokenizer(texts: Iterable[str], extra_special_tokens: Iterable[str] = ()):
    """A ``PreTrainedTokenizerFast`` whose vocabulary is the specials plus every word of ``texts``.

    pad = ``<pad>`` (id 0), bos = ``<s>``, eos = ``<|im_end|>``, unk = ``<unk>``. Save it with
    ``save_pretrained(dir)``; ``AutoTokenizer.from_pretrained(dir)`` loads it offline.
    """
    from transformers import PreTrainedTokenizerFast  # deferred: slow to import

    specials = list(dict.fromkeys([*SPECIAL_TOKENS, *extra_special_tokens]))
    normalizer = normalizers.Lowercase()
    splitter = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                        pre_tokenizers.Punctuation()])
    words = set(TEMPLATE_WORDS)
    for text in texts:
        words.update(w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text)))
    vocab = {token: i for i, token in enumerate(specials)}
    for word in sorted(words - set(vocab)):
        vocab[word] = len(vocab)

    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    tok.normalizer = normalizer
    tok.pre_tokenizer = splitter
    # "#" is always a word of its own, so no word starts with the "##" prefix: a plain space join
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, bos_token=BOS, eos_token=IM_END, unk_token=UNK,
        additional_special_tokens=[t for t in specials if t not in (PAD, BOS, IM_END, UNK)],
        clean_up_tokenization_spaces=False)
