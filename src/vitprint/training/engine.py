"""The epoch loop shared by every training command, on HF Accelerate.

It owns what all runs need: device and precision, seeding per epoch (so a
resumed run follows the uninterrupted one exactly), a progress bar with loss
and images/s, metrics appended as JSON lines, atomic ``last``/``best``
checkpoints and a stop on a non-finite loss that keeps the last good one.
What a step computes and how a model is scored are passed in.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, DistributedDataParallelKwargs, set_seed
from torch import nn
from torch.utils.data import DataLoader

from vitprint.config import RunConfig
from vitprint.data.dataset import DeviceBatches
from vitprint.device import pick_device, pick_precision
from vitprint.errors import VitprintError
from vitprint.progress import bar as progress_bar
from vitprint.training.checkpoint import load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}

# One training step: the loss (or named losses, one called "loss" when the loop should optimise it) and the
# number of images it saw.
StepFn = Callable[[nn.Module, Any], tuple["torch.Tensor | dict[str, torch.Tensor]", int]]
EvalFn = Callable[[nn.Module, DataLoader, Accelerator], dict[str, float]]


def make_accelerator(run: RunConfig, broadcast_buffers: bool = True) -> Accelerator:
    """An Accelerator for ``run.device`` (auto picks cuda, then mps, then cpu) and ``run.precision`` (auto:
    bf16 on a GPU that has it, fp32 elsewhere). Batches reach the device without blocking the host.
    ``broadcast_buffers=False``: with several processes, each keeps its own BatchNorm statistics instead of
    taking the main one's before every forward (a module run twice before one backward needs it: the
    in-place copy breaks that backward in some PyTorch releases)."""
    device = pick_device(run.device)
    precision = pick_precision(run.precision, device)
    if precision == "fp16" and device.type != "cuda":
        raise VitprintError("fp16 needs a GPU; on the CPU use precision bf16 or fp32", "precision")
    # Accelerate keeps one process-wide state; a library may train several times
    # in one process (the demo does), each with its own precision.
    AcceleratorState._reset_state(reset_partial_state=True)
    try:
        return Accelerator(mixed_precision=MIXED[precision], cpu=run.device == "cpu",
                           dataloader_config=DataLoaderConfiguration(non_blocking=True),
                           kwargs_handlers=[] if broadcast_buffers else
                           [DistributedDataParallelKwargs(broadcast_buffers=False)])
    except (ValueError, RuntimeError) as exc:
        raise VitprintError(f"precision {precision} is not available here: {exc}") from None


def adam(params, run: RunConfig, lr: float, weight_decay: float = 0.0, **kw) -> torch.optim.Adam:
    """The seed's Adam, as one fused kernel per step on a GPU or CPU (the same update, fewer launches)."""
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay,
                            fused=pick_device(run.device).type in ("cuda", "cpu"), **kw)


class _CompiledOrEager(nn.Module):
    """Runs ``torch.compile(model)``; the first call that fails (compilation happens then, not when
    ``torch.compile`` returns) logs one line and every call from then on runs the model as it is."""

    def __init__(self, model: nn.Module, fast):
        super().__init__()
        self.model, self.fast, self.failed = model, fast, False

    def forward(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.fast(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 (a missing compiler, an unsupported operation: never stop)
                self.failed = True
                log.warning("could not compile the model (%s: %s); running it as it is", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")
        return self.model(*args, **kwargs)


def compiled(model: nn.Module, run: RunConfig) -> nn.Module:
    """With ``run.compile``, the model compiled by torch.compile, falling back to the model as it is (in one
    log line) where it cannot compile; otherwise the model itself."""
    if not run.compile:
        return model
    log.info("compiling the model with torch.compile (the first steps take longer)")
    return _CompiledOrEager(model, torch.compile(model))


def prepare_out(run: RunConfig) -> Path:
    """Check ``run.out`` before any work: a new run must not overwrite one, --resume needs one."""
    out = Path(run.out)
    last, _ = checkpoint_paths(out)
    if run.resume and not last.is_file():
        raise VitprintError(f"no checkpoint to resume from at {last}", "resume")
    if not run.resume and last.is_file():
        raise VitprintError(f"{out} already holds a run; resume it or choose another output folder", ("resume", "out"))
    out.mkdir(parents=True, exist_ok=True)
    return out


def checkpoint_paths(out: Path) -> tuple[Path, Path]:
    return out / "checkpoints" / "last.safetensors", out / "checkpoints" / "best.safetensors"


@dataclass
class Task:
    """What one kind of training needs from the loop.

    ``monitor`` names the validation metric that picks the best checkpoint;
    ``higher_is_better`` says which way it improves. ``on_best`` runs after a
    new best checkpoint was written (to export an encoder, draw a plot...).
    """

    step: StepFn
    evaluate: EvalFn
    monitor: str
    higher_is_better: bool
    meta: dict[str, Any] = field(default_factory=dict)
    on_best: Callable[[nn.Module, dict[str, float]], None] | None = None
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None  # on the device, on training batches in [-1, 1]


def fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_data: torch.utils.data.Dataset,
    val_data: torch.utils.data.Dataset,
    run: RunConfig,
    task: Task,
) -> list[dict[str, float]]:
    """Train for ``run.epochs`` epochs; returns one metrics record per epoch run here."""
    out = prepare_out(run)
    last_path, best_path = checkpoint_paths(out)
    start_epoch, best = 0, None
    if run.resume:
        meta = load_checkpoint(last_path, model, optimizer)
        scheduler.load_state_dict(meta["scheduler"])
        start_epoch, best = meta["epoch"] + 1, meta.get("best")
        log.info("resuming from %s after epoch %d", last_path, meta["epoch"] + 1)
        if start_epoch >= run.epochs:
            log.info("nothing to do: the run already has %d epochs", start_epoch)
            return []

    acc = make_accelerator(run)
    if acc.is_main_process:
        # The same config travels inside every checkpoint; this copy is for reading.
        (out / "config.json").write_text(json.dumps(task.meta, indent=2))
    # In one process shuffling draws from torch's global generator, reseeded every epoch below; with several,
    # from a generator Accelerate seeds once and keeps equal on all of them. Batches are uint8 until they reach
    # the device (pinned for a GPU); DeviceBatches scales and augments them there.
    pin = acc.device.type == "cuda"
    train_loader = DataLoader(
        train_data, batch_size=run.batch_size, shuffle=True, drop_last=len(train_data) > run.batch_size,
        num_workers=run.num_workers, pin_memory=pin,
    )
    val_loader = DataLoader(val_data, batch_size=run.batch_size, shuffle=False, num_workers=run.num_workers,
                            pin_memory=pin)
    model, optimizer, train_loader, val_loader = acc.prepare(model, optimizer, train_loader, val_loader)
    train_loader = DeviceBatches(train_loader, acc.device, task.augment)
    val_loader = DeviceBatches(val_loader, acc.device)
    runner = compiled(model, run)
    log.info("training on %s, precision %s, %d train / %d validation images", acc.device,
             pick_precision(run.precision, acc.device), len(train_data), len(val_data))

    history = []
    for epoch in range(start_epoch, run.epochs):
        losses = train_one_epoch(runner, train_loader, task.step, acc, epoch, run, optimizer, last_path)
        scheduler.step()
        runner.eval()
        with torch.no_grad(), acc.autocast():
            scores = task.evaluate(runner, val_loader, acc)
        record = {
            "epoch": epoch + 1,
            "train_loss": losses.pop("loss"),
            "images_per_s": losses.pop("images_per_s"),
            "lr": optimizer.param_groups[0]["lr"],
            **scores,
        }
        history.append(record)
        value = scores[task.monitor]
        improved = best is None or (value > best if task.higher_is_better else value < best)
        if improved and math.isfinite(value):
            best = value
        if acc.is_main_process:
            append_record(out, record)
            meta = {**task.meta, "epoch": epoch, "best": best, "monitor": task.monitor,
                    "precision_used": pick_precision(run.precision, acc.device),
                    "scheduler": scheduler.state_dict(), "metrics": record}
            raw = acc.unwrap_model(model)
            # ``last`` goes last: a run killed before it resumes from the epoch before and redoes this one
            # (best included); written first, a kill before ``best`` would leave a stale best behind.
            if improved:
                save_checkpoint(best_path, raw, None, meta)
                if task.on_best is not None:
                    task.on_best(raw, record)
            save_checkpoint(last_path, raw, optimizer, meta)
        log.info("epoch %d/%d: %s", epoch + 1, run.epochs,
                 ", ".join(f"{k}={v:.4g}" for k, v in record.items() if k != "epoch"))
    acc.wait_for_everyone()  # the main process has written the last checkpoint before anyone reads it
    return history


def seed_epoch(seed: int, epoch: int, process: int = 0) -> None:
    """Seed an epoch's random draws with ``seed + epoch`` (in one process a resumed run repeats the
    uninterrupted one).

    Every process but the main one of a multi-process run then takes a stream of its own, so the processes'
    shares of a batch do not get the same noise (a GAN's latent codes, a diffusion model's noise and
    timesteps, augmentations); the main process is seeded as a one-process run is (its draws differ from
    one process's all the same: a one-process loader takes each epoch's shuffling seed from torch's global
    generator, a multi-process one does not). Shuffling is not touched: with several processes Accelerate
    shuffles with a generator of its own, seeded once when the loader is prepared and kept equal on every
    process (so a resumed multi-process run does not repeat the uninterrupted run's batches).
    """
    set_seed(seed + epoch)
    if process:
        set_seed(int(np.random.SeedSequence([seed, epoch, process]).generate_state(1)[0]))


def train_one_epoch(model: nn.Module, loader: DataLoader, step: StepFn, acc: Accelerator, epoch: int, run: RunConfig,
                    optimizer: torch.optim.Optimizer | None = None, last_path: Path | None = None,
                    show_batches: bool = True) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of each loss per image and the images per second.

    The epoch is seeded with ``run.seed + epoch`` (``seed_epoch``; in one process shuffling and noise
    follow it, so a resumed run repeats the uninterrupted one). With ``optimizer`` the loop runs ``step``
    under autocast, then back-propagates its ``"loss"`` and steps; without one, ``step`` updates the model
    itself and owns its autocast (a GAN's two players). A non-finite loss stops training with the last good
    checkpoint named.
    """
    seed_epoch(run.seed, epoch, acc.process_index)
    model.train()
    sums: dict[str, float] = {}
    seen, t0 = 0, time.perf_counter()
    batches = progress_bar(loader, enabled=show_batches and acc.is_local_main_process,
                           desc=f"epoch {epoch + 1}/{run.epochs}", unit="batch")
    for batch in batches:
        with acc.autocast() if optimizer is not None else contextlib.nullcontext():
            out, n = step(model, batch)
        losses = out if isinstance(out, dict) else {"loss": out}
        bad = {k: v.item() for k, v in losses.items() if not torch.isfinite(v.detach())}
        if bad:
            kept = (f"the last good checkpoint is {last_path}" if last_path is not None and last_path.is_file()
                    else "no checkpoint was written yet")
            name, value = next(iter(bad.items()))
            raise VitprintError(f"{name} became {value} in epoch {epoch + 1}; stopped ({kept}). "
                                "Try a lower learning rate or fp32 precision", ("lr", "precision"))
        if optimizer is not None:
            acc.backward(losses["loss"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        for k, v in losses.items():
            sums[k] = sums.get(k, 0.0) + v.item() * n
        seen += n
        first = next(iter(sums))
        batches.set_postfix({first: f"{sums[first] / seen:.4f}", "img_s": f"{seen / (time.perf_counter() - t0):.1f}"})
    if acc.num_processes > 1:  # every process's share of the epoch: one record for all of them
        total = acc.reduce(torch.tensor([*sums.values(), seen], dtype=torch.float64, device=acc.device), "sum")
        sums, seen = dict(zip(sums, total[:-1].tolist())), int(total[-1].item())
    return {**{k: v / max(seen, 1) for k, v in sums.items()}, "images_per_s": seen / (time.perf_counter() - t0)}


def append_record(out: Path, record: dict[str, float]) -> None:
    """One epoch's metrics as a line of ``out/metrics.jsonl`` (``read_history`` reads them back). A line cut
    short by a crash is ended first, so the new record stays a line of its own."""
    path = Path(out) / "metrics.jsonl"
    torn = False
    if path.is_file() and path.stat().st_size:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"
    with path.open("a") as f:
        f.write(("\n" if torn else "") + json.dumps(record) + "\n")


def read_history(out: str | Path) -> list[dict[str, float]]:
    """All epoch records of a run directory (across resumes), last record per epoch wins."""
    path = Path(out) / "metrics.jsonl"
    if not path.is_file():
        return []
    by_epoch = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:  # cut short by a crash; its epoch was redone on resume
            log.warning("%s line %d is incomplete (a crash while it was written); skipped", path, n)
            continue
        by_epoch[rec["epoch"]] = rec
    return [by_epoch[k] for k in sorted(by_epoch)]
