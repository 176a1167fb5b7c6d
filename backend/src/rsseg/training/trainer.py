"""Training loop for RSRefSeg-style referring models (docs/training.md).

AdamW on the trainable parameters only (LoRA adapters, prompter, SAM prompt encoder and mask
decoder), linear warm-up then cosine per optimizer update, optional gradient accumulation and
clipping, autocast on GPU (bf16 where supported, else fp16 with a GradScaler), fp32 on CPU.
Everything that decides the result is seeded and checkpointed (weights, optimizer, scheduler,
RNG, position in the batch order), so a resumed run continues exactly.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from ..weights.trained_checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data.common import RefSample
from .evaluate import evaluate_referring
from .schedule import make_scheduler
from .torch_data import ReferringDataset, train_loader


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
    dice_weight: Optional[float] = None  # None: the model config's (0 for RSRefSeg: BCE only)
    seed: int = 0
    size: int = 0  # training image size; 0: the model's SAM input size
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


def build_trainable(config: dict[str, Any], seed: int = 0, base: Optional[torch.nn.Module] = None) -> torch.nn.Module:
    """The config's RSRefSeg (seeded random base weights, or `base` with real ones) with LoRA
    applied; the LoRA init is seeded too."""
    from ..models.rsrefseg.lora import apply_lora_config
    from ..models.rsrefseg.model import build_rsrefseg

    model = build_rsrefseg(config, seed=seed) if base is None else base
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        apply_lora_config(model, config)
    return model


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


class Trainer:
    """Trains `model` (already built with LoRA, see `build_trainable`) on referring samples."""

    def __init__(self, model: torch.nn.Module, model_id: str, train_samples: Sequence[RefSample],
                 config: TrainConfig, val_samples: Optional[Sequence[RefSample]] = None,
                 extra: Optional[dict[str, Any]] = None):
        self.cfg, self.model_id, self.extra = config, model_id, dict(extra or {})
        torch.manual_seed(config.seed)  # LoRA dropout draws from the global RNG; `resume` restores it
        self.model = model.to(config.device)
        self.size = config.size or int(model.sam.image_encoder.img_size)
        self.train_samples, self.val_samples = list(train_samples), list(val_samples or [])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = make_scheduler(self.optimizer, config.steps, config.warmup_steps, config.min_lr_ratio)
        self.dtype = autocast_dtype(config.device, config.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.dtype == torch.float16)
        self.step = 0
        self.metrics: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []

    # -- state ---------------------------------------------------------------------------------------
    def record(self) -> dict[str, Any]:
        return {"model": self.model_id, "model_config": self.model.config, "step": self.step,
                "train_config": asdict(self.cfg), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "metrics": self.metrics, "history": self.history,
                **self.extra}

    def save(self, stem: Optional[Path] = None) -> Optional[Path]:
        from ..models.rsrefseg.lora import trainable_state_dict

        if stem is None:
            if self.cfg.out_dir is None:
                return None
            stem = Path(self.cfg.out_dir) / "checkpoints" / f"step-{self.step:07d}"
        return save_checkpoint(stem, trainable_state_dict(self.model), self.record(), self.optimizer,
                               rng_state(self.cfg.device))

    def resume(self, checkpoint: "Checkpoint | str | Path") -> None:
        """Continue from a checkpoint written by `save` for the same model and schedule."""
        from ..errors import RssegError
        from ..models.rsrefseg.lora import load_trainable_state_dict

        ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
        if ckpt.record.get("model") != self.model_id:
            raise RssegError(f"checkpoint is for model {ckpt.record.get('model')!r}, not {self.model_id!r}")
        load_trainable_state_dict(self.model, {k: v.to(self.cfg.device) for k, v in ckpt.model.items()})
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
    def _loss(self, batch: dict[str, Any]) -> torch.Tensor:
        from ..models.rsrefseg.model import segmentation_loss

        device = self.cfg.device
        images, masks, tokens = batch["image"].to(device), batch["mask"].to(device), batch["tokens"].to(device)
        with torch.autocast(device_type=torch.device(device).type, dtype=self.dtype, enabled=self.dtype is not None):
            logits = self.model(images, tokens)
        config = self.model.config
        dice = config.get("dice_weight", 0.0) if self.cfg.dice_weight is None else self.cfg.dice_weight
        return segmentation_loss(logits.float(), masks, config.get("bce_weight", 5.0), dice)

    def validate(self) -> dict[str, Any]:
        scores = evaluate_referring(self.model, self.val_samples, self.size, self.cfg.device,
                                    self.cfg.eval_batch_size, self.dtype)
        self.metrics = {"step": self.step, **scores.to_dict()}
        self.history.append(self.metrics)
        return self.metrics

    def train(self, until: Optional[int] = None) -> TrainResult:
        """Run updates up to `until` (default: the configured steps), validating and saving as set."""
        cfg = self.cfg
        until = cfg.steps if until is None else min(until, cfg.steps)
        dataset = ReferringDataset(self.train_samples, self.model.tokenize, self.size)
        batches = iter(train_loader(dataset, cfg.batch_size, cfg.seed, self.step * cfg.accum, cfg.num_workers))
        self.model.train()
        losses: list[float] = []
        bar = None
        if cfg.progress:
            from tqdm import tqdm

            bar = tqdm(total=until, initial=self.step, desc="training", unit="step", file=sys.stderr)
        start, saved = time.perf_counter(), None
        try:
            while self.step < until:
                self.optimizer.zero_grad(set_to_none=True)
                total = 0.0
                for _ in range(cfg.accum):
                    loss = self._loss(next(batches)) / cfg.accum
                    self.scaler.scale(loss).backward()
                    total += float(loss.detach())
                if not math.isfinite(total):
                    from ..errors import RssegError

                    raise RssegError(f"loss is {total} at step {self.step}: lower --lr or check the data")
                if cfg.grad_clip > 0:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.step += 1
                losses.append(total)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{total:.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                last = self.step == until
                if self.val_samples and ((cfg.eval_every and self.step % cfg.eval_every == 0) or last):
                    self.validate()
                    if bar is not None:
                        bar.write(f"step {self.step}: val mIoU {self.metrics['miou']:.4f} "
                                  f"oIoU {self.metrics['oiou']:.4f}", file=sys.stderr)
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
