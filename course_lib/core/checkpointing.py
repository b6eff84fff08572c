"""Small trained weights that ship with the course, with a manifest.

``course_lib/zoo/checkpoints/manifest.json`` holds one entry per checkpoint: its file, sha256, the
recipe that made it, the metrics it reached, the device and the wall time. ``load_checkpoint``
refuses a file whose sha256 does not match, so a half-written or hand-edited file is caught.

``save_checkpoint`` never leaves a folder half-written: the weights and the new manifest go to
temporary files in the same folder first, and only then replace the old ones (``os.replace`` is
atomic), under a lock, so a full disk, a killed process or two trainings saving at once cannot
damage the checkpoints that are already there.
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import hashlib
import io
import json
import os
import reprlib
import secrets
from pathlib import Path

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows has no fcntl: saves go unlocked there, so never run two at once into one folder
    fcntl = None

CHECKPOINT_DIR = Path(__file__).resolve().parents[1] / "zoo" / "checkpoints"  # the shipped folder (course_lib.zoo)
MANIFEST = "manifest.json"
LOCK = ".manifest.lock"
DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # no space left, over quota, over the file size limit


def _folder(directory: str | os.PathLike | None) -> Path:
    """``directory``, or the shipped folder (looked up now, so that tests can point it elsewhere)."""
    return Path(CHECKPOINT_DIR if directory is None else directory)


def _is_shipped(directory: Path) -> bool:
    return directory.resolve() == Path(CHECKPOINT_DIR).resolve()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------ reading

def _how_to_repair(directory: Path) -> str:
    if _is_shipped(directory):
        return f"Restore it with `git checkout -- course_lib/zoo/checkpoints/{MANIFEST}`."
    return f"Delete {directory / MANIFEST} and retrain the checkpoints it listed, or restore it from a backup."


def read_manifest(directory: str | os.PathLike | None = None) -> dict:
    """All manifest entries of ``directory``, by checkpoint name (empty if there is no manifest)."""
    path = _folder(directory) / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_bytes())
    except ValueError as error:  # json.JSONDecodeError, or bytes that are not UTF-8
        where = f" at line {error.lineno}, column {error.colno}" if hasattr(error, "lineno") else ""
        raise ValueError(f"{path} is damaged (not valid JSON{where}: {getattr(error, 'msg', error)}), "
                         f"perhaps by an interrupted save. {_how_to_repair(path.parent)}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"{path} is damaged: it holds a {type(manifest).__name__}, not entries by name. "
                         f"{_how_to_repair(path.parent)}")
    return manifest


def manifest_entry(name: str, directory: str | os.PathLike | None = None,
                   needs: tuple[str, ...] = ("file", "sha256")) -> dict:
    """The manifest entry ``name`` of ``directory``, checked to have every field in ``needs``."""
    directory = _folder(directory)
    manifest = read_manifest(directory)
    if name not in manifest:
        known = ", ".join(sorted(manifest)) or "none"
        raise FileNotFoundError(f"no checkpoint named {name!r} in {directory / MANIFEST} "
                                f"(known: {known}). Train it with the chapter's recipe.")
    entry = manifest[name]
    for field in needs:
        if not isinstance(entry, dict) or field not in entry:
            raise ValueError(f"the entry {name!r} in {directory / MANIFEST} has no {field!r} field: the "
                             f"manifest was edited by hand or is damaged. {_how_to_repair(directory)}")
    return entry


def load_checkpoint(model: torch.nn.Module, name: str, *,
                    directory: str | os.PathLike | None = None) -> dict:
    """Load the shipped weights ``name`` into ``model`` (on its device); return the manifest entry."""
    directory = _folder(directory)
    entry = manifest_entry(name, directory)
    path = directory / entry["file"]
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; restore it with `git checkout -- {path.name}` "
                                "in course_lib/zoo/checkpoints/, or retrain it with the chapter's recipe.")
    if _sha256(path) != entry["sha256"]:
        raise ValueError(f"{path} does not match its sha256 in the manifest: the file is damaged "
                         "or was changed by hand. Restore it with git or retrain it.")
    device = next(model.parameters()).device
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state)
    model.eval()
    return entry


# ------------------------------------------------------------------------------------------ writing

def _plain_key(key, where: str) -> str:
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return json.dumps(key)  # what json itself does with such keys: 1 -> "1", True -> "true"
    raise TypeError(f"{where} has the key {key!r} ({type(key).__name__}), which {MANIFEST} cannot store: "
                    "use strings as keys.")


def plain_json(value, where: str = "value"):
    """``value`` in plain JSON types: numpy scalars and one-value tensors become Python numbers, tuples
    lists. Anything else JSON cannot store raises a TypeError naming where it is, e.g. ``metrics['fid']``."""
    if isinstance(value, (np.generic, np.ndarray, torch.Tensor)) and value.ndim == 0:
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [plain_json(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {_plain_key(key, where): plain_json(item, f"{where}[{key!r}]") for key, item in value.items()}
    raise TypeError(f"{where} = {reprlib.repr(value)} cannot be stored in {MANIFEST} (type "
                    f"{type(value).__name__}): use a number, string, bool, None, list or dict (`.item()` turns "
                    "a one-value tensor or array into a number, `.tolist()` a longer one into a list).")


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"checkpoint name must be letters, digits, '-' or '_', got {name!r}")


def _save_elsewhere(name: str) -> str:
    return f"save it elsewhere: save_checkpoint(..., directory=DIR), or `python -m course_lib.zoo train {name} --out DIR`."


def _check_writable(directory: Path, name: str) -> None:
    """Refuse up front, with a clear message, a folder or file this process may not change."""
    for path in (directory, directory / MANIFEST, directory / f"{name}.pt"):
        if path.exists() and not os.access(path, os.W_OK):
            raise PermissionError(f"cannot save checkpoint {name!r} in {directory}: {path} is read-only. "
                                  f"Nothing was changed; {_save_elsewhere(name)}")


@contextlib.contextmanager
def _manifest_lock(directory: Path):
    """Hold an exclusive lock on ``directory/.manifest.lock``: saves from other processes wait their turn."""
    if fcntl is None:  # Windows: no lock (see the import above)
        yield
        return
    with open(directory / LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_temporary(directory: Path, name: str, data: bytes) -> Path:
    """Write ``data`` to a new hidden file in ``directory``, flushed to the disk; remove it if that fails."""
    temporary = directory / f".{name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        with open(temporary, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return temporary


def _backup(path: Path) -> Path | None:
    """A second name for the file at ``path`` (a hard link, else a copy), so that it can be put back."""
    if not path.exists():
        return None
    backup = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.old")
    try:
        os.link(path, backup)
    except OSError:  # a file system without hard links
        _write_temporary(path.parent, path.name, path.read_bytes()).rename(backup)
    return backup


def _replace_both(new_weights: Path, weights: Path, new_manifest: Path, manifest: Path) -> None:
    """Move the new weights, then the new manifest, into place. If the manifest cannot be replaced,
    put the old weights back, so that the old entry still matches its file."""
    backup = _backup(weights)
    try:
        os.replace(new_weights, weights)
        try:
            os.replace(new_manifest, manifest)
        except BaseException:
            if backup is None:
                weights.unlink(missing_ok=True)
            else:
                os.replace(backup, weights)
            raise
    finally:
        if backup is not None:
            backup.unlink(missing_ok=True)


def _entry(model: torch.nn.Module, data: bytes, file: str, *, recipe, metrics, wall_time_s, device,
           training=None) -> dict:
    entry = {
        "file": file,
        "sha256": hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data),
        "parameters": sum(p.numel() for p in model.parameters()),
        "recipe": plain_json(recipe, "recipe"),
        "metrics": plain_json(metrics, "metrics"),
        "device": str(device),
        "wall_time_s": round(float(wall_time_s), 1),
        "torch": torch.__version__.split("+")[0],
        "created": datetime.date.today().isoformat(),
    }
    if training is not None:  # how it ran: precision, steps, ms/step, machine (History.training_record)
        entry["training"] = plain_json(training, "training")
    return entry


def save_checkpoint(model: torch.nn.Module, name: str, *, recipe: dict, metrics: dict,
                    wall_time_s: float, device: str | torch.device,
                    directory: str | os.PathLike | None = None, training: dict | None = None) -> Path:
    """Write ``model``'s weights to ``directory/name.pt`` and record them in the manifest.

    ``directory`` defaults to the shipped folder. All or nothing: if anything fails (a value in
    ``recipe`` or ``metrics`` that JSON cannot store, a full disk, a read-only folder), the
    checkpoints and the manifest that were there are left as they were.
    """
    _check_name(name)
    directory = _folder(directory)
    path = directory / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory first, so that a full disk raises a plain OSError when we write
    data = buffer.getvalue()
    entry = _entry(model, data, path.name, recipe=recipe, metrics=metrics, wall_time_s=wall_time_s,
                   device=device, training=training)  # a value JSON cannot store fails here, before anything is written
    try:
        directory.mkdir(parents=True, exist_ok=True)
        _check_writable(directory, name)
        with _manifest_lock(directory):  # the whole read-modify-write of the manifest
            manifest = read_manifest(directory)
            manifest[name] = entry
            text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
            new_weights = _write_temporary(directory, path.name, data)
            try:
                new_manifest = _write_temporary(directory, MANIFEST, text.encode())
                try:
                    _replace_both(new_weights, path, new_manifest, directory / MANIFEST)
                finally:
                    new_manifest.unlink(missing_ok=True)
            finally:
                new_weights.unlink(missing_ok=True)
    except OSError as error:
        if error.errno is None:  # our own message (_check_writable) already says what to do
            raise
        advice = "Free some space, or" if error.errno in DISK_FULL else "To keep this checkpoint,"
        raise OSError(error.errno, f"could not save checkpoint {name!r} in {directory}: "
                                   f"{error.strerror or error}. The checkpoints that were there are unchanged. "
                                   f"{advice} {_save_elsewhere(name)}") from error
    return path
