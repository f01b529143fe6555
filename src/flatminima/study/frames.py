"""``frame(folder)``: a study as a pandas DataFrame, the shape researchers analyse in.

One row per finished run: ``id``, ``label`` (the configuration), ``seed``, one column per hyperparameter
(the recipe's or the manifest's), ``model``, every measure's value and its standard error
(``<measure>`` and ``<measure>_stderr``), every target, and the run's training quality (``final_train_loss``,
``reached_target``, ``epochs_run``, ``target_train_loss``), the loss the measures used and the path of its
kept weights. The statistics of the report take these columns (``flatminima.statistics.correlation_table``,
``granulated_tau``, ``conditional_mi``, ``effective_robustness``, ``sign_error``, ``partial_association``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import FlatminimaError
from ..store import Store, measure_record
from .runner import weights_path


def frame(store: Any) -> Any:
    """The finished runs of the study in ``store`` (a folder or an open :class:`Store`) as a DataFrame.

    Examples:
        >>> import tempfile
        >>> from flatminima import study
        >>> spec = {"name": "tiny", "data": {"name": "two_class", "options": {"num_samples": 80}},
        ...         "models": {"mlp": {"width": 4}}, "recipe": {"lr": 0.1, "batch_size": 16, "epochs": 1},
        ...         "seeds": 2, "measures": {"lambda_max": {}}}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     _ = study.run(spec, out=folder, workers=1, progress=False)
        ...     table = study.frame(folder)  # one row per finished run
        >>> len(table), sorted(table["seed"])
        (2, [0, 1])
        >>> {"lambda_max", "lambda_max_stderr", "test_acc", "gap"} <= set(table.columns)
        True
    """
    import pandas as pd

    own = not isinstance(store, Store)
    if own:
        if not (Path(store) / "study.sqlite").exists():
            raise FlatminimaError(f"no study in {str(store)!r} (no study.sqlite); run `flatminima study run` first.")
        store = Store(store, create=False, readonly=True)
    try:
        rows = store.rows("done")
        folder = store.folder
    finally:
        if own:
            store.close()
    records = []
    for r in rows:
        cfg, res = r["config"], r["results"] or {}
        rec: dict[str, Any] = {"id": r["id"], "label": r["label"], "seed": r["seed"], "model": cfg.get("model")}
        rec.update(cfg.get("recipe") or {})
        for name, stored in (res.get("measures") or {}).items():
            m = measure_record(stored)
            rec[name], rec[f"{name}_stderr"] = m["value"], m["stderr"]
        metrics = res.get("metrics") or {}
        targets = res.get("targets")
        if targets is None:  # stores written before targets were kept: the classic ones live in metrics
            targets = {k: metrics.get(k) for k in ("gap", "test_acc", "ece", "shift_drop") if k in metrics}
        rec.update({f"target:{k}" if k in rec else k: v for k, v in targets.items()})
        for k in ("train_acc", "test_acc", "train_loss", "test_loss"):
            rec.setdefault(k, metrics.get(k))
        training = res.get("training") or {}
        rec.update({k: training.get(k) for k in ("final_train_loss", "reached_target", "epochs_run",
                                                 "target_train_loss")})
        rec["loss"] = res.get("loss", "cross_entropy")
        kept = weights_path(folder, r["id"])
        rec["weights"] = str(kept) if kept.exists() else (cfg.get("source") or {}).get("path")
        records.append(rec)
    return pd.DataFrame.from_records(records)
