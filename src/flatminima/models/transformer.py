"""Small transformers fed dict batches, and the losses that weight them exactly by their number of targets.

Batches are dicts ``{"input_ids": (B, T) long, "attention_mask": (B, T) 0/1, "labels": ...}`` as in
Hugging Face ``transformers``. The ``*_loss(model, batch) -> (mean, count)`` functions plug into
``Objective(model, loss_fn=..., data=batches)``; returning the count makes the Objective's mean

    L(θ) = Σ_b count_b · mean_b / Σ_b count_b = Σ_targets ℓ / #targets

exact over every target (token, regression entry) however padding spreads them over sequences and
batches, rather than a mean of per-batch means. The same functions accept a Hugging Face model: they call
``model(input_ids=..., attention_mask=...)`` and read ``.logits`` when the output has it.

The models are plain PyTorch (attention written out, no fused kernels) so that double backward,
``torch.func.functional_call`` and ``vmap`` all work on them; pre-LayerNorm blocks as in GPT-2
(Radford et al. 2019), attention as in Vaswani et al. (2017).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ..errors import FlatminimaError, require_positive_int

__all__ = ["IGNORE_INDEX", "SequenceClassifier", "TransformerLM", "classification_loss", "lm_loss",
           "mse_loss", "toy_lm_batches", "toy_regression_batches"]

IGNORE_INDEX = -100  # the label value that marks "no target here" (the Hugging Face convention)


class _Block(nn.Module):
    """Pre-LN transformer block: x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, causal: bool, dropout: float):
        super().__init__()
        self.n_heads, self.causal = n_heads, causal
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv, self.proj = nn.Linear(d_model, 3 * d_model), nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d // self.n_heads)
        allowed = keep[:, None, None, :].bool()
        if self.causal:
            allowed = allowed & torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        # A finite fill (not -inf) keeps a fully masked row (a padding query) finite: its output is unused.
        scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = self.drop(scores.softmax(-1))
        x = x + self.drop(self.proj((attn @ v).transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class _Encoder(nn.Module):
    def __init__(self, vocab_size: int, d_model: int, n_heads: int, n_layers: int, max_len: int,
                 causal: bool, dropout: float):
        super().__init__()
        for name, value in [("vocab_size", vocab_size), ("d_model", d_model), ("n_heads", n_heads),
                            ("n_layers", n_layers), ("max_len", max_len)]:
            require_positive_int(name, value)
        if d_model % n_heads:
            raise FlatminimaError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
        self.max_len = max_len
        self.tok, self.pos = nn.Embedding(vocab_size, d_model), nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList(
            _Block(d_model, n_heads, 4 * d_model, causal, dropout) for _ in range(n_layers))
        self.ln = nn.LayerNorm(d_model)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        t = input_ids.shape[1]
        if t > self.max_len:
            raise FlatminimaError(f"sequence length {t} exceeds the model's max_len={self.max_len}.")
        keep = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        x = self.tok(input_ids) + self.pos(torch.arange(t, device=input_ids.device))
        for block in self.blocks:
            x = block(x, keep)
        return self.ln(x)


class TransformerLM(_Encoder):
    """A small causal (GPT-style) language model: ``model(input_ids, attention_mask) -> logits (B, T, V)``."""

    def __init__(self, vocab_size: int = 64, d_model: int = 32, n_heads: int = 2, n_layers: int = 2,
                 max_len: int = 64, dropout: float = 0.0):
        super().__init__(vocab_size, d_model, n_heads, n_layers, max_len, causal=True, dropout=dropout)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.encode(input_ids, attention_mask))


class SequenceClassifier(_Encoder):
    """A small bidirectional encoder with masked mean pooling: ``-> (B, num_outputs)``.

    ``num_outputs`` classes for :func:`classification_loss`, or regression targets for :func:`mse_loss`.
    """

    def __init__(self, vocab_size: int = 64, num_outputs: int = 2, d_model: int = 32, n_heads: int = 2,
                 n_layers: int = 2, max_len: int = 64, dropout: float = 0.0):
        super().__init__(vocab_size, d_model, n_heads, n_layers, max_len, causal=False, dropout=dropout)
        require_positive_int("num_outputs", num_outputs)
        self.head = nn.Linear(d_model, num_outputs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encode(input_ids, attention_mask)
        keep = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        w = keep.to(h.dtype).unsqueeze(-1)
        return self.head((h * w).sum(1) / w.sum(1).clamp_min(1.0))


# --------------------------------------------------------------------------------------------- losses
def _outputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if not isinstance(batch, dict) or "input_ids" not in batch:
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise FlatminimaError(
            f"a dict batch with 'input_ids' (and 'attention_mask', 'labels') is needed; got {got}.")
    kwargs = {"input_ids": batch["input_ids"]}
    if batch.get("attention_mask") is not None:
        kwargs["attention_mask"] = batch["attention_mask"]
    out = model(**kwargs)
    return out.logits if hasattr(out, "logits") else out


def _labels(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if "labels" not in batch:
        raise FlatminimaError(f"the batch has no 'labels' entry (keys: {sorted(batch)}).")
    return batch["labels"]


def lm_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Next-token cross-entropy, mean over the target tokens, and their number.

        ℓ = −Σ_{i,t} m_{i,t} log p_θ(y_{i,t+1} | y_{i,≤t}) / Σ m_{i,t}

    with m = 0 where the label is ``IGNORE_INDEX`` (-100) or the target position is padding
    (``attention_mask`` 0). Labels default to ``input_ids``; as in Hugging Face, position t predicts
    ``labels[:, t+1]`` (the shift happens here).
    """
    logits = _outputs(model, batch)
    labels = batch.get("labels", batch["input_ids"])[:, 1:]
    if batch.get("attention_mask") is not None:
        labels = labels.masked_fill(batch["attention_mask"][:, 1:] == 0, IGNORE_INDEX)
    count = int((labels != IGNORE_INDEX).sum())
    logits = logits[:, :-1]
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                            ignore_index=IGNORE_INDEX, reduction="sum")
    return total / max(count, 1), count


def classification_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Cross-entropy of one label per sequence (``labels`` of shape (B,)), mean and count B."""
    labels = _labels(batch)
    return F.cross_entropy(_outputs(model, batch), labels), int(labels.shape[0])


def mse_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """Squared error, mean over every target entry, and the number of entries.

        ℓ = Σ_j m_j (f_θ(x)_j − y_j)² / Σ_j m_j

    Sequence-level targets (B,) or (B, k) count every entry; token-level targets (B, T) or (B, T, k) are
    masked by ``attention_mask`` so padding adds no targets. (The ½ is not included, as in ``mse_loss``.)
    """
    labels = _labels(batch)
    pred = _outputs(model, batch).reshape(labels.shape)
    mask = torch.ones_like(labels, dtype=pred.dtype)
    am = batch.get("attention_mask")
    if am is not None and labels.dim() >= 2 and labels.shape[:2] == am.shape:
        mask = mask * am.to(pred.dtype).reshape(am.shape + (1,) * (labels.dim() - 2))
    count = int(mask.sum())
    return ((pred - labels.to(pred.dtype)) ** 2 * mask).sum() / max(count, 1), count


# --------------------------------------------------------------------------------------------- toy data
def _padded_ids(num: int, seq_len: int, vocab_size: int,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Counting sequences ``a, a+s, a+2s, ... (mod vocab)`` of random length, right-padded with 0."""
    start = torch.randint(0, vocab_size, (num, 1), generator=gen)
    step = torch.randint(1, 4, (num, 1), generator=gen)
    ids = (start + step * torch.arange(seq_len)) % vocab_size
    lengths = torch.randint(max(2, seq_len // 2), seq_len + 1, (num, 1), generator=gen)
    mask = (torch.arange(seq_len) < lengths).long()
    return ids * mask, mask


def toy_lm_batches(num_sequences: int = 64, seq_len: int = 16, vocab_size: int = 64, batch_size: int = 16,
                   seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Learnable toy language-modelling data with padding: a list of dict batches (no download)."""
    gen = torch.Generator().manual_seed(seed)
    ids, mask = _padded_ids(num_sequences, seq_len, vocab_size, gen)
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    return _batches({"input_ids": ids, "attention_mask": mask, "labels": labels}, batch_size)


def toy_regression_batches(num_sequences: int = 64, seq_len: int = 16, vocab_size: int = 64,
                           batch_size: int = 16, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """Sequence regression: the target is the mean token id / vocab of the unpadded tokens (a float)."""
    gen = torch.Generator().manual_seed(seed)
    ids, mask = _padded_ids(num_sequences, seq_len, vocab_size, gen)
    target = (ids * mask).sum(1).float() / mask.sum(1) / vocab_size
    return _batches({"input_ids": ids, "attention_mask": mask, "labels": target}, batch_size)


def _batches(data: dict[str, Any], batch_size: int) -> list[dict[str, torch.Tensor]]:
    require_positive_int("batch_size", batch_size)
    n = data["input_ids"].shape[0]
    return [{k: v[i:i + batch_size] for k, v in data.items()} for i in range(0, n, batch_size)]
