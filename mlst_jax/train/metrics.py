"""Training metrics: TensorBoard event files (tensorboardX, no TensorFlow), a JSONL log, a progress bar with
throughput and MFU, and a NaN/inf loss check.

MFU (model FLOPs utilization) = FLOPs per step / seconds per step / peak FLOP/s. FLOPs per step come from
XLA's cost analysis of the compiled train step (`step_flops`), which counts one device's share of the program
(forward, backward and optimizer update; the trainer multiplies it by the number of devices); the peak is
what you pass in: the sum over all devices of their dense peak at the compute dtype (e.g. 989e12 per H100
SXM for bf16, 67e12 for fp32).
Without a peak, no MFU is shown.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import tqdm
from tensorboardX import SummaryWriter

__all__ = ["MetricsWriter", "read_metrics", "step_flops", "check_finite"]


def step_flops(jitted_fn, *args, **kwargs) -> float | None:
    """FLOPs of one call of `jitted_fn(*args)` from XLA's cost analysis of the compiled program (None when
    the backend reports none). Arguments may be arrays or ShapeDtypeStructs."""
    try:
        cost = jitted_fn.lower(*args, **kwargs).compile().cost_analysis()
    except Exception:  # noqa: BLE001 - cost analysis is optional on some backends
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    return float(flops) if flops is not None and flops > 0 else None


def check_finite(step: int, loss: float, last_good_checkpoint: int | None) -> None:
    """Raises FloatingPointError("loss is nan at step N; the last good checkpoint is step M") for a
    non-finite loss."""
    loss = float(loss)
    if not math.isfinite(loss):
        where = "none was saved" if last_good_checkpoint is None else f"step {last_good_checkpoint}"
        kind = "nan" if math.isnan(loss) else "inf"
        raise FloatingPointError(f"loss is {kind} at step {step}; the last good checkpoint is {where}")


def _scalar(v: Any) -> float | int | None:
    v = np.asarray(v)
    if v.size != 1:
        return None
    v = v.item()
    return v if isinstance(v, (int, float)) else float(v)


class MetricsWriter:
    """Writes scalars to TensorBoard (`<workdir>/tb`) and `<workdir>/metrics.jsonl`, and drives a progress bar.

    `write(step, metrics)` appends one JSON object (`{"step": N, **metrics}`) per call, adds each scalar
    as `<prefix>/<name>` to TensorBoard and, for training metrics, updates the bar with loss, steps/s,
    frames/s (from a `frames` metric: feature frames per step) and MFU (see the module docstring). Resuming
    appends to the same files.
    """

    def __init__(self, workdir: str | Path, total_steps: int | None = None, initial_step: int = 0,
                 peak_flops: float | None = None, flops_per_step: float | None = None, progress: bool = True,
                 enabled: bool = True):
        self.workdir = Path(workdir)
        self.enabled = enabled
        self.peak_flops, self.flops_per_step = peak_flops, flops_per_step
        self.jsonl_path = self.workdir / "metrics.jsonl"
        self._tb = self._jsonl = None
        if enabled:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._tb = SummaryWriter(str(self.workdir / "tb"))
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        self._bar = tqdm.tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                              disable=not (progress and enabled))
        self._last = (initial_step, time.perf_counter())

    def throughput(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """steps/s, frames/s and MFU since the previous call (frames per step from `metrics["frames"]`)."""
        last_step, last_time = self._last
        now = time.perf_counter()
        self._last = (step, now)
        if step <= last_step or now <= last_time:
            return {}
        rate = (step - last_step) / (now - last_time)
        out = {"steps_per_s": rate}
        if "frames" in metrics:
            out["frames_per_s"] = float(metrics["frames"]) * rate
        if self.peak_flops and self.flops_per_step:
            out["mfu"] = self.flops_per_step * rate / self.peak_flops
        return out

    def write(self, step: int, metrics: Mapping[str, Any], prefix: str = "train") -> dict[str, Any]:
        """Logs `metrics` (scalars; others are skipped) at `step`; returns what was logged."""
        row = {k: s for k, v in metrics.items() if (s := _scalar(v)) is not None}
        if prefix == "train":
            row.update(self.throughput(step, row))
        if self.enabled:
            for k, v in row.items():
                self._tb.add_scalar(f"{prefix}/{k}", v, step)
            self._jsonl.write(json.dumps({"step": int(step), "split": prefix, **row}) + "\n")
            self._jsonl.flush()
            self._tb.flush()
        if prefix == "train":
            self._bar.n = int(step)
            shown = {"loss": f"{row['loss']:.3f}"} if "loss" in row else {}
            for key, name, fmt in (("steps_per_s", "step/s", "{:.2f}"), ("frames_per_s", "frames/s", "{:.0f}"),
                                   ("mfu", "MFU", "{:.1%}")):
                if key in row:
                    shown[name] = fmt.format(row[key])
            self._bar.set_postfix(shown, refresh=True)
        return row

    def close(self) -> None:
        """Flushes and closes the files and the bar."""
        self._bar.close()
        if self.enabled:
            self._tb.close()
            self._jsonl.close()


def read_metrics(workdir: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """The rows `MetricsWriter` logged for `split` (its prefix) in `<workdir>/metrics.jsonl`, by step (a resumed
    run's repeated steps: the last logged)."""
    rows: dict[int, dict[str, Any]] = {}
    with open(Path(workdir) / "metrics.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row.get("split") == split:
                rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]
