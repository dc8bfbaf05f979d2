import json
import struct

import jax
import jax.numpy as jnp
import pytest
from tensorboardX.proto import event_pb2

from mlst_jax.train.metrics import MetricsWriter, check_finite, read_metrics, step_flops


def read_events(path):
    """Scalars of a TFRecord event file as {tag: [(step, value)]}."""
    data, out, pos = path.read_bytes(), {}, 0
    while pos < len(data):
        (n,) = struct.unpack("<Q", data[pos : pos + 8])
        event = event_pb2.Event.FromString(data[pos + 12 : pos + 12 + n])
        pos += 12 + n + 4
        for v in event.summary.value:
            out.setdefault(v.tag, []).append((event.step, v.simple_value))
    return out


def test_jsonl_and_event_file(tmp_path):
    w = MetricsWriter(tmp_path, total_steps=10, progress=False, peak_flops=1e9, flops_per_step=1e6)
    w.write(1, {"loss": jnp.float32(3.5), "frames": 1000, "vector": jnp.ones(3)})
    w.write(2, {"loss": 3.25, "frames": 1000})
    w.write(2, {"loss": 4.0, "bleu_de": 12.5}, prefix="eval")
    w.close()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train"), (2, "train"), (2, "eval")]
    assert rows[0]["loss"] == 3.5 and "vector" not in rows[0]
    assert rows[1]["steps_per_s"] > 0 and rows[1]["frames_per_s"] == pytest.approx(1000 * rows[1]["steps_per_s"])
    assert rows[1]["mfu"] == pytest.approx(1e6 * rows[1]["steps_per_s"] / 1e9)
    assert rows[2] == {"step": 2, "split": "eval", "loss": 4.0, "bleu_de": 12.5}
    (event_file,) = (tmp_path / "tb").glob("events.out.tfevents.*")
    scalars = read_events(event_file)
    assert scalars["train/loss"] == [(1, 3.5), (2, 3.25)]
    assert scalars["eval/bleu_de"] == [(2, 12.5)]


def test_resume_appends(tmp_path):
    for step in (1, 2):
        w = MetricsWriter(tmp_path, progress=False, initial_step=step - 1)
        w.write(step, {"loss": 1.0})
        w.close()
    assert [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_read_metrics(tmp_path):
    for start, steps in ((0, (2, 4)), (2, (4, 6))):  # a run resumed from step 2 logs step 4 again
        w = MetricsWriter(tmp_path, progress=False, initial_step=start)
        for step in steps:
            w.write(step, {"loss": float(step + start), "lr": 1e-3 / step})
        w.write(steps[-1], {"bleu_avg": 1.5}, prefix="eval")
        w.close()
    train = read_metrics(tmp_path)
    assert [(r["step"], r["loss"]) for r in train] == [(2, 2.0), (4, 6.0), (6, 8.0)]
    assert train[-1]["lr"] == pytest.approx(1e-3 / 6)
    assert [(r["step"], r["bleu_avg"]) for r in read_metrics(tmp_path, "eval")] == [(4, 1.5), (6, 1.5)]


def test_nan_detection():
    check_finite(3, 2.0, 2)
    with pytest.raises(FloatingPointError, match=r"^loss is nan at step 7; the last good checkpoint is step 5$"):
        check_finite(7, float("nan"), 5)
    with pytest.raises(FloatingPointError, match="loss is inf at step 1; the last good checkpoint is none"):
        check_finite(1, jnp.inf, None)


def test_step_flops():
    f = jax.jit(lambda a, b: a @ b)
    x = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    flops = step_flops(f, x, jax.ShapeDtypeStruct((32, 16), jnp.float32))
    assert flops is None or flops == pytest.approx(2 * 64 * 32 * 16, rel=0.1)
