"""``python -m course_lib.zoo train NAME``: run a shipped model's recipe and save its checkpoint, safely.

Under torchrun (``torchrun --standalone --nproc_per_node N -m course_lib.zoo train NAME``) the processes train
together with DistributedDataParallel (``course_lib.core.distributed``) and process 0 alone writes the checkpoint.
Without ``--force`` it never replaces a checkpoint that is already there (``--out DIR`` keeps both); a long
recipe keeps its run's state on disk so that ``--resume`` continues an interrupted run; and if saving fails
after the training, the trained weights are rescued to a file whose path is printed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from course_lib.core import checkpointing, distributed
from course_lib.core.profiles import RECIPE_PROFILES, profile
from course_lib.core.runtime import device
from course_lib.zoo.record import REGISTRY

PROG = "python -m course_lib.zoo train"
RESCUE_DIR = "~/.cache/course_lib/rescued"  # where trained weights go that could not be saved
RUNS_DIR = "~/.cache/course_lib/runs"  # where a long run keeps its state, to --resume it


def resumable() -> list[str]:
    return sorted(name for name, record in REGISTRY.items() if record.resumable)


def state_file(args) -> Path | None:
    """Where a resumable recipe keeps its run's state: one file per model, profile and seed (None if the model's
    recipe is not resumable, or for --dry-run)."""
    if not REGISTRY[args.name].resumable or args.dry_run:
        return None
    folder = Path(args.out) if args.out is not None else Path(RUNS_DIR).expanduser()
    return folder / f"{args.name}-{args.profile or profile()}-seed{args.seed}.state.pt"


def command(args, *more: str) -> str:
    """The command line that ran, with ``more`` options, to show in advice."""
    words = [PROG, args.name]
    words += ["--profile", args.profile] if args.profile else []
    words += ["--seed", str(args.seed)] if args.seed else []
    return " ".join(words + list(more))


def refusal(args, entry: dict) -> str:
    """Why the checkpoint ``entry`` is not replaced without --force, and what to run instead."""
    had = f"metrics {entry.get('metrics')} ({entry.get('device')}, {entry.get('created')})"
    if args.out is None:
        return (f"{args.name} is already shipped in {checkpointing.CHECKPOINT_DIR} with {had}. Nothing was trained.\n"
                f"  to keep both, save the new one elsewhere: {command(args, '--out DIR')}\n"
                f"  to replace the shipped one:               {command(args, '--force')}\n")
    return (f"{args.out} already holds {args.name} with {had}. Nothing was trained.\n"
            f"  to keep both, pick another folder: {command(args, '--out OTHER_DIR')}\n"
            f"  to replace it:                     {command(args, '--out', str(args.out), '--force')}\n")


def rescue(model: torch.nn.Module, name: str, details: dict) -> Path | None:
    """Save ``model``'s weights (and ``details`` as JSON beside them) where nothing can be harmed, after
    save_checkpoint failed: RESCUE_DIR, else the temporary folder. Return the path, or None."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    try:
        text = json.dumps(details, indent=2, default=repr) + "\n"  # a value JSON cannot store as its repr
    except (TypeError, ValueError):
        text = repr(details) + "\n"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for folder in (Path(RESCUE_DIR).expanduser(), Path(tempfile.gettempdir())):
        path, n = folder / f"{name}-{stamp}.pt", 1
        while path.exists():  # never overwrite an earlier rescue
            path, n = folder / f"{name}-{stamp}-{n}.pt", n + 1
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.save(state, path)
        except Exception:
            path.unlink(missing_ok=True)
            continue
        try:
            path.with_suffix(".json").write_text(text)
        except OSError:
            pass  # the weights are what matter
        return path
    return None


def rescue_report(rescued: Path | None, args, error: Exception) -> str:
    """Where the rescued weights are, and how to try again."""
    if rescued is None:
        kept = f"The trained weights could not be rescued either (tried {RESCUE_DIR} and the temporary folder).\n"
    else:
        kept = (f"The trained weights are safe in {rescued}, "
                f"their recipe and metrics in {rescued.with_suffix('.json')}.\n"
                f"  to use them: model.load_state_dict(torch.load({str(rescued)!r}))\n")
    if isinstance(error, OSError):
        return kept + f"  to train again into a folder you can write: {command(args, '--out DIR')}\n"
    same_target = (["--out", str(args.out)] if args.out else []) + (["--force"] if args.force else [])
    return kept + f"  to train again, fix what the error names first, then: {command(args, *same_target)}\n"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=(
        "Run a shipped model's recipe and save its checkpoint in the shipped folder (or in --out DIR). A checkpoint "
        "that is already there is only replaced with --force."))
    p.add_argument("name", choices=sorted(REGISTRY))
    p.add_argument("--profile", choices=RECIPE_PROFILES, default=None,
                   help="run profile (default: $COURSE_PROFILE, else gpu with CUDA, else cpu); 'shipped': the "
                        "settings that made the shipped checkpoint, where they are none of the three")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="save the checkpoint and its manifest entry in DIR, not in course_lib/zoo/checkpoints/")
    p.add_argument("--force", action="store_true", help="replace a checkpoint NAME that is already there")
    p.add_argument("--dry-run", action="store_true", help="train and report, but write nothing")
    p.add_argument("--resume", action="store_true",
                   help=f"continue an interrupted run from its state file (long recipes save one every 5 minutes "
                        f"in {RUNS_DIR}/, or in --out DIR)")
    return p


def main(argv=None) -> None:
    cli = parser()
    args = cli.parse_args(argv)
    state = state_file(args)
    if args.resume and state is None:
        cli.exit(2, f"{PROG}: {args.name} is not resumable: it trains in minutes, so it keeps no state file. "
                    f"Resumable: {', '.join(resumable())}.\n")
    if state is not None and state.is_file() and not args.resume:
        cli.exit(2, f"{PROG}: an interrupted run of {args.name} is saved in {state}.\n"
                    f"  to continue it: {command(args, '--resume')}\n"
                    f"  to start over, delete it first: rm {state}\n")
    if args.resume and not state.is_file():
        cli.exit(2, f"{PROG}: nothing to resume: no state file {state}. Run without --resume to start.\n")
    old = None
    if not args.dry_run:  # refuse before training, not after an hour of it
        try:
            old = checkpointing.read_manifest(args.out).get(args.name)
        except ValueError as damaged:
            cli.exit(2, f"{PROG}: {damaged}\n")
        if old is not None and not args.force:
            cli.exit(2, f"{PROG}: {refusal(args, old)}")

    options = {} if state is None else {"state_file": state}
    try:
        model, history, metrics, recipe = REGISTRY[args.name].train(args.profile, seed=args.seed, **options)
        distributed.barrier()  # under torchrun: every process has finished training
    finally:
        if not distributed.is_main():  # process 0 alone reports and writes the checkpoint and the manifest
            distributed.teardown()
    if not distributed.is_main():
        return
    processes = f" x {distributed.world().size} processes" if distributed.is_distributed() else ""
    if distributed.is_distributed() and not distributed.trained_together():
        print(f"note: {args.name}'s recipe has a training loop of its own, not course_lib.core.train.fit: each of the "
              f"{distributed.world().size} processes trained it alone and only process 0's model is saved. "
              "Run it without torchrun.")
    print(f"{args.name}: {metrics} in {history.wall_time_s:.1f} s on {device()}{processes}")
    distributed.teardown()
    if args.dry_run:
        return
    where = {} if args.out is None else {"directory": args.out}
    try:
        path = checkpointing.save_checkpoint(model, args.name, recipe=recipe, metrics=metrics,
                                             wall_time_s=history.wall_time_s, device=device(),
                                             training=history.training_record(), **where)
    except Exception as error:  # never throw a long training away: keep the weights somewhere
        rescued = rescue(model, args.name, {"name": args.name, "recipe": recipe, "metrics": metrics,
                                            "wall_time_s": history.wall_time_s, "device": str(device())})
        cli.exit(1, f"{PROG}: could not save {args.name}: {type(error).__name__}: {error}\n"
                    + rescue_report(rescued, args, error))
    print(f"wrote {path}")
    if state is not None:
        state.unlink(missing_ok=True)  # the run is complete and saved: nothing left to resume
    if old is not None:
        print(f"replaced the old {args.name}\n  old metrics: {old.get('metrics')}\n  new metrics: {metrics}")
