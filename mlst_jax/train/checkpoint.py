"""Training checkpoints with Orbax: async saves, keep-N, restore into sharded targets, preemption handling.

A checkpoint step directory holds four items: ``state`` (the TrainState: step, params, opt_state, rng),
``data`` (the input pipeline's iterator state, JSON), ``config`` (the experiment config, JSON) and
``sharing_plan`` (`SharingPlan.to_json()`; ``null`` for a fully shared model). ``restore_latest`` restores
the newest readable step directly into the shardings of an abstract target; a step that fails to restore
(truncated or corrupt files) is renamed to ``<step>.corrupt`` with a warning and the previous step is tried.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import threading
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

__all__ = ["Checkpointer", "Restored", "PreemptionFlag", "save_on_preemption"]

logger = logging.getLogger(__name__)

_ITEMS = ("state", "data", "config", "sharing_plan")


class _NoItemMetadataWarning(logging.Filter):
    """Orbax warns once per read that a step's item directory has no `_CHECKPOINT_METADATA` (it sits one level up,
    in the step directory): a message about its own layout that a user can do nothing about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Metadata file does not exist")


logging.getLogger("absl").addFilter(_NoItemMetadataWarning())


def _reason(e: Exception, limit: int = 300) -> str:
    """One line of an exception; for TensorStore's nested "CODE: Error opening ...: Error reading ...: cause
    [tensorstore_spec=...]" its code and innermost cause."""
    text = " ".join(re.sub(r"\s*\[tensorstore_spec.*", "", str(e), flags=re.S).split())
    nested = re.match(r"^([A-Z_]+): (?:.*: )?(.+)$", text)
    if nested and ": " in text[len(nested.group(1)) + 2:]:
        text = f"{nested.group(1)}: ... {nested.group(2)}"
    text = f"{type(e).__name__}: {text}"
    return text if len(text) <= limit else text[:limit] + " ..."


class _LoopDroppingLateCallbacks(asyncio.SelectorEventLoop):
    """An event loop for restores that drops what their abandoned reads leave behind. When an Orbax restore fails,
    the TensorStore reads it started for the other arrays complete later and schedule their results on the restore's
    closed loop: the default loop raises "Event loop is closed" for each, and TensorStore prints every traceback
    (thousands of lines for a real model); and the reads that failed too log "exception was never retrieved" with
    their full tracebacks. The restore's own error is raised (and reported once) all the same."""

    def call_exception_handler(self, context):
        if str(context.get("message", "")).endswith("exception was never retrieved"):
            return
        super().call_exception_handler(context)

    def call_soon_threadsafe(self, callback, *args, context=None):
        if self.is_closed():
            return None
        try:
            return super().call_soon_threadsafe(callback, *args, context=context)
        except RuntimeError:
            if self.is_closed():  # closed between the check and the call
                return None
            raise


class _DropLateCallbacksPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return _LoopDroppingLateCallbacks()


@contextlib.contextmanager
def _loops_dropping_late_callbacks():
    """New event loops (Orbax makes one per restore) are `_LoopDroppingLateCallbacks` within the block."""
    previous = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(_DropLateCallbacksPolicy())
    try:
        yield
    finally:
        asyncio.set_event_loop_policy(previous)


class Restored(NamedTuple):
    """What `Checkpointer.restore` returns: the step, the TrainState, the data-iterator state (or None),
    the config dict and the sharing plan (None until sharing plans are saved)."""

    step: int
    state: Any
    data_state: Any
    config: Any
    sharing_plan: Any


def _to_json(config: Any) -> Any:
    if config is None:
        return None
    if hasattr(config, "to_json_best_effort"):
        return json.loads(config.to_json_best_effort())
    return config


class Checkpointer:
    """Orbax `CheckpointManager` over `directory` keeping the newest `keep` steps.

    Saves are asynchronous when `async_save` (the arrays are copied to host before `save` returns; the
    files are written in the background): call `wait()` before reading the files, and `close()` at the end.
    """

    def __init__(self, directory: str | Path, keep: int | None = 10, async_save: bool = True):
        self.directory = Path(directory).absolute()
        self._options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                     enable_async_checkpointing=async_save)
        self.manager = ocp.CheckpointManager(self.directory, item_names=_ITEMS, options=self._options)

    def all_steps(self) -> list[int]:
        """Saved steps, oldest first (including one still being written)."""
        return sorted(self.manager.all_steps())

    def latest_step(self) -> int | None:
        """The newest saved step, or None."""
        return self.manager.latest_step()

    def save(self, state, *, data_state: Any = None, config: Any = None, sharing_plan: Any = None,
             schedule_start: int = 0, step: int | None = None, force: bool = True) -> bool:
        """Saves `state` (a TrainState) with the iterator state, config, sharing plan and the step the learning-rate
        schedule started at under `step` (default `state.step`); returns whether a save was started."""
        step = int(jax.device_get(state.step)) if step is None else int(step)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave({"state": data_state, "schedule_start": int(schedule_start)}),
            config=ocp.args.JsonSave({"config": _to_json(config)}),
            sharing_plan=ocp.args.JsonSave({"plan": sharing_plan}),
        )
        return self.manager.save(step, args=args, force=force)

    def restore(self, step: int, abstract_state) -> Restored:
        """Restores `step` into `abstract_state` (ShapeDtypeStructs with shardings, or arrays)."""
        out = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            config=ocp.args.JsonRestore(),
            sharing_plan=ocp.args.JsonRestore(),
        ))
        return Restored(step, out["state"], out["data"]["state"], out["config"]["config"], out["sharing_plan"]["plan"])

    def restore_latest(self, abstract_state) -> Restored | None:
        """Restores the newest readable step into `abstract_state`'s shardings; None when there is none.

        A step that fails to restore is renamed to `<step>.corrupt` (so a later save can reuse the step
        number) with a warning, and the previous one is tried.
        """
        self.wait()
        for step in reversed(self.all_steps()):
            try:
                with _loops_dropping_late_callbacks():
                    return self.restore(step, abstract_state)
            except Exception as e:  # noqa: BLE001 - any read error means the step is unusable
                path = self.directory / str(step)
                bad = path.with_name(f"{step}.corrupt")
                logger.warning("checkpoint step %d in %s cannot be restored (%s); moved to %s, falling back to the "
                               "previous step", step, self.directory, _reason(e), bad.name)
                logger.debug("checkpoint step %d: %r", step, e)
                if jax.process_index() == 0 and path.exists():
                    path.rename(bad)
                self.manager.reload()
        return None

    def params_shapes(self, step: int) -> Any:
        """The saved parameters of `step` as ShapeDtypeStructs, read from the checkpoint's metadata."""
        with ocp.PyTreeCheckpointer() as ckptr:
            meta = ckptr.metadata(self.directory / str(step) / "state")
        tree = getattr(meta, "item_metadata", meta)
        tree = getattr(tree, "tree", tree)
        return jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), tree["params"])

    def restore_params(self, step: int) -> Any:
        """The saved parameters of `step` as host numpy arrays (no target structure needed)."""
        target = self.params_shapes(step)
        with ocp.PyTreeCheckpointer() as ckptr:
            restored = ckptr.restore(self.directory / str(step) / "state", args=ocp.args.PyTreeRestore(
                item={"params": target},
                restore_args={"params": jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)},
                partial_restore=True))
        return jax.device_get(restored["params"])

    def restore_json(self, step: int, item: str) -> Any:
        """The JSON item ("data", "config", "sharing_plan" or "schedule_start") saved with `step`, without reading
        arrays (None when the step holds no such entry)."""
        folder, key = {"data": ("data", "state"), "config": ("config", "config"),
                       "sharing_plan": ("sharing_plan", "plan"), "schedule_start": ("data", "schedule_start")}[item]
        path = self.directory / str(step) / folder / "metadata"
        if not path.is_file():
            raise ValueError(f"checkpoint {self.directory / str(step)} has no {item} item ({path} is missing)")
        return json.loads(path.read_text()).get(key)

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Waits for pending saves and releases the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


class PreemptionFlag:
    """Set by SIGTERM (see `save_on_preemption`); the training loop saves and exits when `requested`."""

    def __init__(self):
        self._event = threading.Event()

    @property
    def requested(self) -> bool:
        """True once a preemption signal arrived (the same on every process in multi-process runs)."""
        local = self._event.is_set()
        if jax.process_count() > 1:
            return bool(multihost_utils.process_allgather(jax.numpy.asarray(local)).any())
        return local

    def set(self) -> None:
        """Requests a save-and-exit (what the signal handler does)."""
        self._event.set()

    def restore_handlers(self) -> None:
        """Reinstates the signal handlers that were active before `save_on_preemption`."""
        for sig, handler in getattr(self, "_previous", {}).items():
            signal.signal(sig, handler)


def save_on_preemption(signals=(signal.SIGTERM,)) -> PreemptionFlag:
    """Installs handlers for `signals` (SIGTERM) that set the returned flag instead of killing the process.

    The loop checks `flag.requested` after every step, then saves a checkpoint and returns cleanly.
    Only callable from the main thread (Python's signal rule).
    """
    flag = PreemptionFlag()
    flag._previous = {}
    for sig in signals:
        flag._previous[sig] = signal.signal(sig, lambda signum, frame: flag.set())
    return flag
