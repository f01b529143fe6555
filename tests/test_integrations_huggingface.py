"""The Hugging Face callback's values reach the Trainer's own loggers (TensorBoard, log_history, later callbacks)
at the record steps, with the numbers of the flatminima store."""

from __future__ import annotations

import warnings

import pytest
import torch

import flatminima.track as ft

transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from flatminima.dynamics import SharpnessMonitor  # noqa: E402
from flatminima.errors import FlatminimaError  # noqa: E402
from flatminima.integrations.huggingface import FlatminimaTrainerCallback  # noqa: E402
from flatminima.models.transformer import lm_loss, toy_lm_batches  # noqa: E402


class Recorder(transformers.TrainerCallback):
    """A stand-in logger after the flatminima callback: what each on_log receives, by step."""

    def __init__(self):
        self.logs: list[tuple[int, dict]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append((int(state.global_step), dict(logs)))

    def flatminima(self) -> dict[int, dict[str, float]]:
        out: dict[int, dict[str, float]] = {}
        for step, logs in self.logs:
            out.setdefault(step, {}).update({k: v for k, v in logs.items() if k.startswith("flatminima/")})
        return {s: m for s, m in out.items() if m}


def _model_and_rows():
    config = transformers.GPT2Config(vocab_size=16, n_positions=12, n_embd=8, n_layer=1, n_head=2, bos_token_id=0,
                                     eos_token_id=0)
    config._attn_implementation = "eager"  # Hessian products need attention with second derivatives
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    batches = toy_lm_batches(8, 10, 16, batch_size=4)
    rows = [{"input_ids": b["input_ids"][i], "labels": b["input_ids"][i]} for b in batches
            for i in range(len(b["input_ids"]))]
    return model, batches, rows


def _trainer(tmp_path, model, rows, callbacks, **args):
    kw = dict(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4, report_to=[],
              use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True) | args
    return transformers.Trainer(model=model, args=transformers.TrainingArguments(**kw), train_dataset=rows,
                                callbacks=callbacks)


def _stored(store, run: str) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for r in ft.load(store, run=run):
        out.setdefault(r["step"], {})[f"flatminima/{run}/{r['measure']}"] = r["value"]
    return out


def test_values_reach_tensorboard_log_history_and_later_callbacks(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model, batches, rows = _model_and_rows()
    store = tmp_path / "track.sqlite"
    tracker = ft.Tracker(model, batches, loss_fn=lm_loss, measures=["loss", "lambda_max"], every=2, store=store,
                         run="hf")
    recorder = Recorder()
    trainer = _trainer(tmp_path, model, rows, [recorder], report_to=["tensorboard"])
    callback = FlatminimaTrainerCallback(tracker).attach(trainer)
    assert trainer.callback_handler.callbacks[0] is callback
    trainer.train()

    stored = _stored(store, "hf")
    assert sorted(stored) == [0, 2, 4] and set(stored[2]) == {"flatminima/hf/loss", "flatminima/hf/lambda_max"}
    assert recorder.flatminima() == stored  # the same numbers, at the record steps, step 0 included
    history = {}
    for entry in trainer.state.log_history:
        history.setdefault(entry["step"], {}).update(entry)
    for step, metrics in stored.items():
        assert {k: history[step][k] for k in metrics} == metrics
    assert "loss" in history[2]  # the Trainer's own loss is logged at the record step it was asked to log

    scalars: dict[str, dict[int, float]] = {}
    for f in (tmp_path / "out").rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(f))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, {}).update({e.step: e.value for e in acc.Scalars(tag)})
    for measure in ("loss", "lambda_max"):  # TensorBoard's integration prefixes train/; it stores float32
        tb = scalars[f"train/flatminima/hf/{measure}"]
        assert sorted(tb) == [0, 2, 4]
        assert [tb[s] for s in (0, 2, 4)] == pytest.approx(
            [stored[s][f"flatminima/hf/{measure}"] for s in (0, 2, 4)], rel=1e-6)


def test_sharpness_monitor_values_reach_the_trainer_with_the_trainers_optimiser(tmp_path):
    model, batches, rows = _model_and_rows()
    monitor = SharpnessMonitor(model, batches, loss_fn=lm_loss, every=2, batch_sharpness=4, batch_samples=2,
                               run="m")
    recorder = Recorder()
    trainer = _trainer(tmp_path, model, rows, [recorder], learning_rate=1e-3)
    FlatminimaTrainerCallback(monitor).attach(trainer)
    trainer.train()

    logged = recorder.flatminima()
    assert sorted(logged) == [0, 2, 4]
    names = {k.removeprefix("flatminima/m/") for k in logged[2]}
    assert names == {"loss", "lambda_max", "preconditioned_sharpness", "batch_sharpness", "threshold", "lr",
                     "edge_ratio"}  # AdamW: the preconditioned sharpness against its threshold
    for r in monitor.history:
        assert logged[r["step"]][f"flatminima/m/{r['measure']}"] == r["value"]
    lr = logged[2]["flatminima/m/lr"]  # the Trainer's linear decay: the rate of the step to come
    assert lr == pytest.approx(1e-3 * 2 / 4)
    assert logged[2]["flatminima/m/threshold"] == pytest.approx((2 + 2 * 0.9) / ((1 - 0.9) * lr), rel=1e-9)
    # at the last step the schedule is at 0: no step to be stable for, so no threshold, and no error
    assert logged[4]["flatminima/m/lr"] == 0.0 and "flatminima/m/threshold" not in logged[4]


def test_unattached_callback_still_fills_log_history_and_warns_only_when_reporting(tmp_path):
    model, batches, rows = _model_and_rows()
    tracker = ft.Tracker(model, batches, loss_fn=lm_loss, measures=["loss"], every=2)
    recorder = Recorder()
    trainer = _trainer(tmp_path, model, rows, [FlatminimaTrainerCallback(tracker), recorder])
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # report_to=[]: nothing missed, nothing to warn about
        trainer.train()
    # passed in callbacks= it cannot log the record at the start (the Trainer logs no step 0): store only
    assert sorted(recorder.flatminima()) == [2, 4] and tracker.series("loss")[0] == [0, 2, 4]
    assert [e["flatminima/run/loss"] for e in trainer.state.log_history if "flatminima/run/loss" in e] == \
        tracker.series("loss")[1][1:]

    pytest.importorskip("tensorboard")
    model, batches, rows = _model_and_rows()
    tracker = ft.Tracker(model, batches, loss_fn=lm_loss, measures=["loss"], every=2)
    trainer = _trainer(tmp_path, model, rows, [FlatminimaTrainerCallback(tracker)], report_to=["tensorboard"])
    with pytest.warns(UserWarning, match="attach"):
        trainer.train()


def test_log_to_trainer_false_keeps_values_in_the_tracker(tmp_path):
    model, batches, rows = _model_and_rows()
    tracker = ft.Tracker(model, batches, loss_fn=lm_loss, measures=["loss"], every=2)
    recorder = Recorder()
    trainer = _trainer(tmp_path, model, rows, [recorder])
    FlatminimaTrainerCallback(tracker, log_to_trainer=False).attach(trainer)
    trainer.train()
    assert recorder.flatminima() == {} and tracker.series("loss")[0] == [0, 2, 4]
    assert not any(k.startswith("flatminima/") for e in trainer.state.log_history for k in e)
    with pytest.raises(FlatminimaError, match="attach needs"):
        FlatminimaTrainerCallback(tracker).attach(object())
