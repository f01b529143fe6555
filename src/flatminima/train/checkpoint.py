"""Checkpoints: plain ``state_dict``s saved with ``torch.save``, loaded with ``weights_only=True``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import FlatminimaError


def save_checkpoint(path: str | Path, model: nn.Module, **extra: Any) -> str:
    """Write the model's state dict (and plain extras: epoch, metrics, optimizer state) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"model": model.state_dict(), **extra}, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a truncated checkpoint
    return str(path)


def load_checkpoint(path: str | Path, model: nn.Module | None = None) -> dict[str, Any]:
    """Load a checkpoint safely (no code runs) and, if ``model`` is given, load its weights into it.

    Accepts files holding ``{"model": state_dict, ...}`` or a bare state dict.
    """
    path = Path(path)
    if not path.exists():
        raise FlatminimaError(f"checkpoint {str(path)!r} does not exist.")
    if path.is_dir():
        raise FlatminimaError(f"checkpoint {str(path)!r} is a folder; give the state-dict file (torch.save) in it.")
    if path.stat().st_size == 0:
        raise FlatminimaError(f"checkpoint {str(path)!r} is empty (0 bytes): an interrupted save? Save the state "
                              "dict again with torch.save(model.state_dict(), path).")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, truncated files, non-tensor payloads
        head = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise FlatminimaError(f"cannot load checkpoint {str(path)!r} safely (weights_only=True): it is damaged, "
                              f"not a torch.save file, or holds objects other than tensors ({head}). Save "
                              "model.state_dict() with torch.save.") from err
    if not isinstance(blob, dict):
        raise FlatminimaError(f"checkpoint {str(path)!r} holds a {type(blob).__name__}, not a state dict; save "
                              "model.state_dict() with torch.save.")
    state = blob["model"] if isinstance(blob.get("model"), dict) else blob
    if not state:
        raise FlatminimaError(f"checkpoint {str(path)!r} holds an empty state dict; save model.state_dict().")
    odd = [(k, type(v).__name__) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if odd and "model" not in blob:
        shown = ", ".join(f"{k!r} ({t})" for k, t in odd[:5])
        raise FlatminimaError(f"checkpoint {str(path)!r} is not a state dict: {len(odd)} entr(ies) are not tensors "
                              f"({shown}); save model.state_dict() with torch.save.")
    if model is not None:
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise FlatminimaError(
                f"checkpoint {str(path)!r} does not fit the model (missing, unexpected or mis-shaped "
                f"tensors): {err}. Build the model with the same architecture and sizes it was trained with."
            ) from err
    return blob if "model" in blob else {"model": state}
