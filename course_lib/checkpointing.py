"""Small trained weights that ship with the course, with a manifest.

``course_lib/checkpoints/manifest.json`` holds one entry per checkpoint: its file, sha256, the
recipe that made it, the metrics it reached, the device and the wall time. ``load_checkpoint``
refuses a file whose sha256 does not match, so a half-written or hand-edited file is caught.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import torch

CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(directory: str | os.PathLike = CHECKPOINT_DIR) -> dict:
    """All manifest entries of ``directory``, by checkpoint name (empty if there is no manifest)."""
    path = Path(directory) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}


def save_checkpoint(model: torch.nn.Module, name: str, *, recipe: dict, metrics: dict,
                    wall_time_s: float, device: str | torch.device,
                    directory: str | os.PathLike = CHECKPOINT_DIR) -> Path:
    """Write ``model``'s weights to ``directory/name.pt`` and record them in the manifest."""
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"checkpoint name must be letters, digits, '-' or '_', got {name!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, path)
    manifest = read_manifest(directory)
    manifest[name] = {
        "file": path.name,
        "sha256": _sha256(path),
        "size_bytes": path.stat().st_size,
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": recipe,
        "metrics": metrics,
        "device": str(device),
        "wall_time_s": round(float(wall_time_s), 1),
        "torch": torch.__version__.split("+")[0],
        "created": datetime.date.today().isoformat(),
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return path


def load_checkpoint(model: torch.nn.Module, name: str, *,
                    directory: str | os.PathLike = CHECKPOINT_DIR) -> dict:
    """Load the shipped weights ``name`` into ``model`` (on its device); return the manifest entry."""
    directory = Path(directory)
    entry = read_manifest(directory).get(name)
    if entry is None:
        known = ", ".join(sorted(read_manifest(directory))) or "none"
        raise FileNotFoundError(f"no checkpoint named {name!r} in {directory / MANIFEST} "
                                f"(known: {known}). Train it with the chapter's recipe.")
    path = directory / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; restore it with `git checkout -- {path.name}` "
                                "in course_lib/checkpoints/, or retrain it with the chapter's recipe.")
    if _sha256(path) != entry["sha256"]:
        raise ValueError(f"{path} does not match its sha256 in the manifest: the file is damaged "
                         "or was changed by hand. Restore it with git or retrain it.")
    device = next(model.parameters()).device
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return entry
