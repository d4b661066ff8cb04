"""How the official C-MCR inference tokenises CLIP text vs cmcr (open_clip), measured offline.

The official code embeds CLIP text with HF transformers (``CLIPProcessor.from_pretrained(
'openai/clip-vit-base-patch32')``: a ``CLIPTokenizerFast``, ``padding=True``, no truncation). cmcr uses
open_clip's tokenizer (OpenAI CLIP's: ftfy, HTML unescaped twice, whitespace cleaned, truncated to 77).
HF's files cannot be downloaded here, so this script writes the same BPE vocabulary and merges (open_clip
ships OpenAI's ``bpe_simple_vocab_16e6``; HF's ``vocab.json`` / ``merges.txt`` for that model are the
same table) and builds both HF tokenizers from them, then a random-weight HF ``CLIPTextModel`` with
the real 77 positions to show what a longer caption does.

    python benchmarks/tokenizer_diff.py
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPTIONS = ["Fish &amp; chips on a plate", "A man&#39;s bike leaning on a wall"]
LONG = " ".join(["a large brown dog runs across the green field"] * 9)


def hf_tokenizers(folder: Path):
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTokenizer, CLIPTokenizerFast

    bpe = SimpleTokenizer()
    vocab = {("<|startoftext|>" if k == "<start_of_text>" else "<|endoftext|>" if k == "<end_of_text>" else k): v
             for k, v in bpe.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(bpe.bpe_ranks.items(), key=lambda kv: kv[1])
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for (a, b), _ in merges))
    files = (str(folder / "vocab.json"), str(folder / "merges.txt"))
    return CLIPTokenizerFast(*files), CLIPTokenizer(*files)


def main() -> None:
    import open_clip
    import torch
    from transformers import CLIPTextConfig, CLIPTextModel

    ours = open_clip.get_tokenizer("ViT-B-32-quickgelu")
    with tempfile.TemporaryDirectory() as tmp:
        fast, slow = hf_tokenizers(Path(tmp))
        for caption in CAPTIONS:
            ids = ours([caption])[0]
            print(f"{caption!r}")
            print(f"  open_clip (cmcr):       {ids[ids > 0].tolist()}")
            print(f"  HF CLIPTokenizerFast:   {fast(caption)['input_ids']}  {fast.convert_ids_to_tokens(fast(caption)['input_ids'])[1:-1]}")
            print(f"  HF CLIPTokenizer(slow): {slow(caption)['input_ids']}")
        n_fast = len(fast(LONG)["input_ids"])
        print(f"a caption of {n_fast} tokens: open_clip keeps {int((ours([LONG])[0] > 0).sum())} (truncated, "
              f"<end_of_text> last); HF gives all {n_fast}")
        batch = fast([CAPTIONS[0], LONG], padding=True, return_tensors="pt")
        torch.manual_seed(0)
        model = CLIPTextModel(CLIPTextConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                             num_attention_heads=2, max_position_embeddings=77))
        try:
            model(**batch)
            print("HF CLIPTextModel took the batch")
        except Exception as exc:  # what the official inference hits for the whole batch
            print(f"HF CLIPTextModel on a batch of 2 with it: {type(exc).__name__}: {str(exc).splitlines()[0]}")


if __name__ == "__main__":
    main()
