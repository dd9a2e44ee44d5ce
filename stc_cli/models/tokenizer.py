"""A tokenizer for random-weight models, so that they need no download.

Byte-level BPE with no merges: each byte is one token (256), then the chat special tokens of the Qwen2
family, then the model's own (image or video placeholders). Encoding any text works; it is a real
``PreTrainedTokenizerFast`` that ``save_pretrained`` writes and ``AutoTokenizer`` reads back.
"""

from __future__ import annotations

CHAT_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")


def byte_tokenizer(extra_special_tokens: tuple[str, ...] = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=[*CHAT_TOKENS, *extra_special_tokens],
    )
