"""The training loop every model family shares (docs/training.md, "The shared loop and the family hooks").

`BaseTrainer` owns what does not depend on the model: AdamW on the trainable parameters, linear
warm-up then cosine per optimizer update (schedule.py), optional gradient accumulation and
clipping, autocast on GPU (bf16 where supported, else fp16 with a GradScaler), fp32 on CPU,
validation every N updates, a progress bar and progress events, and cancellation between updates.
Everything that decides the result is seeded and checkpointed (weights, optimizer, scheduler,
scaler, RNG, position in the batch order), so a resumed run continues exactly.

A family subclasses it and fills in the hooks: `compute_loss` (always), `train_dataset` (or
`train_batches` for its own loader), `evaluate` (when it has validation data), `build_model` (for
`rsseg train`), and, when it trains only part of the model, `trainable_state` /
`load_trainable_state`. It registers the subclass with `@trainer("<family>")` (registry.py).
"""

from __future__ import annotations

import json
import math
import sys
import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Optional, Sequence

import torch
from torch.utils.data import Dataset

from ..errors import Cancelled, ModelError, RssegError
from ..progress import CancelToken, ProgressCallback, report
from ..spec import ModelSpec
from ..weights.trained_checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .batches import train_loader
from .schedule import make_scheduler


@dataclass
class TrainConfig:
    """How to train; saved in every checkpoint's JSON."""

    steps: int = 100  # optimizer updates
    batch_size: int = 8
    accum: int = 1  # micro-batches per update (the effective batch is batch_size * accum)
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    grad_clip: float = 1.0  # max gradient norm; 0 disables clipping
    dice_weight: Optional[float] = None  # None: the model config's (0 for RSRefSeg: BCE only); for mask losses
    seed: int = 0
    size: int = 0  # training image size; 0: the family's default (RSRefSeg: the model's SAM input size)
    device: str = "cpu"
    amp: str = "auto"  # auto (bf16/fp16 on GPU, off on CPU), off, bf16, fp16
    checkpoint_every: int = 0  # also save every N updates (0: only at the end)
    eval_every: int = 0  # validate every N updates (0: only at the end)
    eval_batch_size: int = 8
    num_workers: int = 0
    progress: bool = True
    out_dir: Optional[str] = None  # None: no files written


@dataclass
class TrainResult:
    step: int
    seconds: float
    losses: list[float] = field(default_factory=list)  # one per update
    metrics: dict[str, Any] = field(default_factory=dict)  # last validation scores
    checkpoint: Optional[str] = None


def autocast_dtype(device: str, amp: str) -> Optional[torch.dtype]:
    """The autocast dtype for a device and --amp choice (None: full fp32)."""
    if amp == "off" or torch.device(device).type != "cuda":
        return None
    if amp == "bf16" or (amp == "auto" and torch.cuda.is_bf16_supported()):
        return torch.bfloat16
    return torch.float16


def rng_state(device: str) -> dict[str, torch.Tensor]:
    state = {"torch": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def set_rng_state(state: dict[str, torch.Tensor], device: str) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))


class BaseTrainer(ABC):
    """Trains `model` (already built for training, e.g. by `build_model`) on `train_data`.

    `train_data` and `val_data` are whatever the family's `train_dataset` and `evaluate` read
    (RefSamples for RSRefSeg); the base only stores them and validates when `val_data` is not empty.
    """

    family: ClassVar[str] = ""  # set by @trainer("<family>")

    def __init__(self, model: torch.nn.Module, model_id: str, train_data: Sequence[Any], config: TrainConfig,
                 val_data: Optional[Sequence[Any]] = None, extra: Optional[dict[str, Any]] = None):
        self.cfg, self.model_id, self.extra = config, model_id, dict(extra or {})
        torch.manual_seed(config.seed)  # dropout draws from the global RNG; `resume` restores it
        self.model = model.to(config.device)
        self.train_data, self.val_data = list(train_data), list(val_data or [])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = self.make_optimizer(self.params)
        self.scheduler = make_scheduler(self.optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
        self.dtype = autocast_dtype(config.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.step = 0
        self.last_loss: Optional[float] = None
        self.metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    # -- hooks a family overrides ----------------------------------------------------------------------
    @classmethod
    def build_model(cls, spec: ModelSpec, seed: int = 0) -> torch.nn.Module:
        """The model `rsseg train` trains for a registry entry of this family, seeded."""
        raise ModelError(f"the {cls.family or cls.__name__} trainer cannot build {spec.id!r} from the registry")

    def train_dataset(self) -> Dataset:
        """The torch Dataset over `train_data` that `train_batches` draws from."""
        raise NotImplementedError(f"{type(self).__name__} must define train_dataset() or train_batches()")

    def train_batches(self, start_batch: int) -> Iterable[Any]:
        """Endless micro-batches in the seeded order, starting at micro-batch `start_batch` (the ones
        a resumed checkpoint already consumed are skipped). Override only for a family's own loader,
        which must keep that contract for exact resume."""
        cfg = self.cfg
        return train_loader(self.train_dataset(), cfg.batch_size, cfg.seed, start_batch, cfg.num_workers)

    @abstractmethod
    def compute_loss(self, batch: Any) -> torch.Tensor:
        """The scalar loss of one micro-batch. It runs outside autocast: wrap the forward pass in
        `self.autocast()` and compute the loss in fp32."""

    def evaluate(self) -> dict[str, Any]:
        """Scores on `val_data` (called when there is any): a JSON-serialisable dict."""
        raise NotImplementedError(f"{type(self).__name__} has validation data but no evaluate()")

    def summarise(self, metrics: dict[str, Any]) -> str:
        """One line of validation scores for the progress bar and the CLI."""
        return " ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What a checkpoint holds of the model: by default all of it."""
        return self.model.state_dict()

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def model_config(self) -> Any:
        """The model's architecture as JSON data, recorded in every checkpoint."""
        return getattr(self.model, "config", None)

    def make_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    # -- helpers for the hooks -------------------------------------------------------------------------
    def autocast(self) -> torch.autocast:
        """Autocast at the run's precision (disabled on CPU and with --amp off)."""
        return torch.autocast(device_type=torch.device(self.cfg.device).type, dtype=self.dtype,
                              enabled=self.dtype is not None)

    # -- state ---------------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {"model": self.model_id, "model_config": self.model_config(), "step": self.step,
                "train_config": asdict(self.cfg), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "metrics": self.metrics, "history": self.history,
                **self.extra}

    def save(self, stem: Optional[Path] = None) -> Optional[Path]:
        """Write a checkpoint (atomically: see weights/trained_checkpoint.py); None without out_dir."""
        if stem is None:
            if self.cfg.out_dir is None:
                return None
            stem = Path(self.cfg.out_dir) / "checkpoints" / f"step-{self.step:07d}"
        return save_checkpoint(stem, self.trainable_state(), self.record(), self.optimizer,
                               rng_state(self.cfg.device))

    def resume(self, checkpoint: "Checkpoint | str | Path") -> None:
        """Continue from a checkpoint written by `save` for the same model and schedule."""
        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        if ckpt.record.get("model") != self.model_id:
            raise RssegError(f"checkpoint is for model {ckpt.record.get('model')!r}, not {self.model_id!r}")
        self.load_trainable_state({k: v.to(self.cfg.device) for k, v in ckpt.model.items()})
        if ckpt.optimizer is not None:
            self.optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.record["scheduler"])
        if ckpt.record.get("scaler"):
            self.scaler.load_state_dict(ckpt.record["scaler"])
        set_rng_state(ckpt.rng, self.cfg.device)
        self.step = ckpt.step
        self.metrics = dict(ckpt.record.get("metrics") or {})
        self.history = list(ckpt.record.get("history") or [])

    # -- loop ----------------------------------------------------------------------------------------
    def validate(self) -> dict[str, Any]:
        self.metrics = {"step": self.step, **self.evaluate()}
        self.history.append(self.metrics)
        return self.metrics

    def _update(self, batches: Iterator[Any]) -> float:
        """One optimizer update over `accum` micro-batches; returns its loss."""
        cfg = self.cfg
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.accum):
            loss = self.compute_loss(next(batches)) / cfg.accum
            self.scaler.scale(loss).backward()
            total += float(loss.detach())
        if not math.isfinite(total):
            raise RssegError(f"loss is {total} at step {self.step}: lower --lr or check the data")
        if cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        self.last_loss = total
        return total

    def _check_cancel(self, cancel: Optional[CancelToken]) -> None:
        if cancel is not None and cancel.cancelled:
            raise Cancelled(f"training cancelled at step {self.step}: nothing saved for it (checkpoints "
                            "written earlier are complete and kept)")

    def train(self, until: Optional[int] = None, cancel: Optional[CancelToken] = None,
              progress: Optional[ProgressCallback] = None) -> TrainResult:
        """Run updates up to `until` (default: the configured steps), validating and saving as set.

        `cancel` is checked between updates; once set, Cancelled is raised before the next update
        or before validating/saving, so a cancelled run writes no checkpoint and no metrics.json.
        `progress` gets a ("train", step, until) event after every update."""
        cfg = self.cfg
        until = cfg.steps if until is None else min(until, cfg.steps)
        batches = iter(self.train_batches(self.step * cfg.accum))
        self.model.train()
        losses: list[float] = []
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=until, initial=self.step, desc="training", unit="step", file=sys.stderr)
        start, saved = time.perf_counter(), None
        try:
            while self.step < until:
                self._check_cancel(cancel)
                total = self._update(batches)
                losses.append(total)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                report(progress, "train", self.step, until)
                self._check_cancel(cancel)
                last = self.step == until
                if self.val_data and ((cfg.eval_every and self.step % cfg.eval_every == 0) or last):
                    self.validate()
                    if bar is not None:
                        bar.write(f"step {self.step}: val {self.summarise(self.metrics)}", file=sys.stderr)
                if (cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0) or last:
                    saved = self.save() or saved
        finally:
            if bar is not None:
                bar.close()
        seconds = time.perf_counter() - start
        if cfg.out_dir is not None:
            out = Path(cfg.out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "metrics.json").write_text(json.dumps(
                {"model": self.model_id, "step": self.step, "seconds": seconds, "losses": losses,
                 "metrics": self.metrics, "history": self.history, "checkpoint": str(saved) if saved else None,
                 **self.extra}, indent=2), encoding="utf-8")
        return TrainResult(self.step, seconds, losses, dict(self.metrics), str(saved) if saved else None)
