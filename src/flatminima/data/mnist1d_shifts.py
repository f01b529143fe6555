"""MNIST-1D (Greydanus & Kabir 2020) generated locally, with distribution shifts made by the generator itself.

A shift regenerates the *same* samples (same seed, hence the same random draws for every sample: the
generator consumes a fixed number of draws per sample whatever its parameters) with one generator
parameter moved away from its default. Shifted test sets are therefore paired with the clean test set:
only the shifted factor of variation differs. Every set is standardised with the clean data's mean and
standard deviation (the generator's own ``make_dataset`` standardises each set by its own statistics,
which would partly undo a larger noise or scale).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext

import numpy as np

from ..errors import FlatminimaError, require_positive_int

# Generator parameter and its value at severities 1..5 (defaults: iid 0.02, corr 0.25, translation 48,
# scale 0.4, shear 0.75). The padded signal is 72 samples long, so translations stop at 72; the amplitude
# factor 1 + c (u - 1/2) stays positive for c < 2.
SHIFTS: dict[str, tuple[str, tuple[float, ...]]] = {
    "iid_noise": ("iid_noise_scale", (0.05, 0.1, 0.2, 0.3, 0.5)),
    "corr_noise": ("corr_noise_scale", (0.5, 0.75, 1.0, 1.5, 2.0)),
    "translation": ("max_translation", (56, 60, 64, 68, 72)),  # drawn k scaled by value/default
    "scale": ("scale_coeff", (0.8, 1.0, 1.2, 1.5, 1.9)),
    "shear": ("shear_scale", (1.25, 1.75, 2.5, 3.5, 5.0)),
}


def generator_args(num_samples: int, seed: int, overrides: dict):
    """The ``mnist1d`` generator's arguments with ``overrides`` applied (unknown names refused)."""
    from mnist1d.data import get_dataset_args

    require_positive_int("num_samples", num_samples)
    args = get_dataset_args()
    unknown = [k for k in overrides if not hasattr(args, k)]
    if unknown:
        raise FlatminimaError(f"unknown MNIST-1D generator parameters {unknown}; "
                              f"allowed: {sorted(get_dataset_args(as_dict=True))}.")
    args.num_samples, args.seed = num_samples, seed
    for k, v in overrides.items():
        setattr(args, k, v)
    return args


def raw_signals(args, *, record: bool = False) -> dict:
    """Unstandardised signals and labels, drawn exactly as ``mnist1d.data.make_dataset`` draws them.

    With ``record``, also the NumPy RNG state before each sample and the final shuffle, so a shifted copy
    of any sample can be regenerated alone. NumPy's global RNG state is restored afterwards.
    """
    from mnist1d.data import get_templates, transform

    templates = get_templates()
    state = np.random.get_state()
    try:
        np.random.seed(args.seed)
        xs, ys, states = [], [], []
        for label_ix in range(len(templates["y"])):
            for _ in range(args.num_samples // len(templates["y"])):
                if record:
                    states.append(np.random.get_state())
                x, _t = transform(templates["x"][label_ix], templates["t"], args)
                xs.append(x)
                ys.append(templates["y"][label_ix])
        order = np.random.permutation(len(ys))
        perm = np.random.permutation(args.final_seq_length) if args.shuffle_seq else None
    finally:
        np.random.set_state(state)
    xs, ys = np.stack(xs)[order], np.stack(ys)[order]
    if perm is not None:
        xs = xs[..., perm]
    return {"x": xs, "y": ys, "states": states, "order": order, "labels": np.asarray(templates["y"]),
            "seq_perm": perm}


@contextmanager
def _scaled_translation(factor: float):
    """Within the block, the generator's translation draws k as before and uses round(k·factor) instead.

    Drawing as before keeps the random stream (and so every other factor of variation) paired with the
    clean sample; ``np.random.choice(n)`` with a different n would consume a different number of draws.
    """
    from mnist1d.data import transform

    namespace = transform.__globals__  # the module whose global `translate` the generator calls
    original = namespace["translate"]

    def translate(x, max_translation):
        k = int(round(np.random.choice(max_translation) * factor)) % len(x)
        return np.concatenate([x[-k:], x[:-k]]) if k else x.copy()

    namespace["translate"] = translate
    try:
        yield
    finally:
        namespace["translate"] = original


def _regenerate(base: dict, args, cut: int, translation_factor: float | None) -> np.ndarray:
    """The test samples of ``base`` regenerated from their recorded RNG states with generator ``args``."""
    from mnist1d.data import get_templates, transform

    templates = get_templates()
    per_class = args.num_samples // len(templates["y"])
    state = np.random.get_state()
    out = []
    try:
        with _scaled_translation(translation_factor) if translation_factor else nullcontext():
            for i in base["order"][cut:]:
                np.random.set_state(base["states"][i])
                out.append(transform(templates["x"][i // per_class], templates["t"], args)[0])
    finally:
        np.random.set_state(state)
    xs = np.stack(out)
    return xs if base["seq_perm"] is None else xs[..., base["seq_perm"]]


def mnist1d_arrays(num_samples: int = 5000, seed: int = 42, **overrides) -> dict[str, np.ndarray]:
    """MNIST-1D exactly as ``make_dataset`` returns it (keys x, y, x_test, y_test), plus the standardisation
    (``mean``, ``std``) and, under ``"_base"``, what :func:`mnist1d_shifts` needs to regenerate test
    samples."""
    args = generator_args(num_samples, seed, overrides)
    base = raw_signals(args, record=True)
    xs, ys = base["x"], base["y"]
    mean, std = xs.mean(), xs.std()
    xs = (xs - mean) / std
    cut = int(len(ys) * args.train_split)
    return {"x": xs[:cut], "y": ys[:cut], "x_test": xs[cut:], "y_test": ys[cut:], "mean": mean, "std": std,
            "_base": base, "_cut": cut}


def mnist1d_shifts(arrays: dict, overrides: dict, names: list[str] | None = None,
                   severities: tuple[int, ...] = (1, 2, 3, 4, 5)) -> dict[str, dict[int, tuple]]:
    """Shifted test sets ``{name: {severity: (x, y)}}`` (NumPy) of the clean data ``arrays`` (from
    :func:`mnist1d_arrays`), each test sample regenerated with its own random draws and one parameter moved,
    standardised with the clean mean and standard deviation."""
    from mnist1d.data import get_dataset_args

    names = list(SHIFTS) if names is None else names
    bad = [n for n in names if n not in SHIFTS]
    if bad:
        raise FlatminimaError(f"unknown MNIST-1D shifts {bad}; allowed: {sorted(SHIFTS)}.")
    base, cut = arrays["_base"], arrays["_cut"]
    num_samples = len(base["y"])
    out: dict[str, dict[int, tuple]] = {}
    for name in names:
        param, values = SHIFTS[name]
        out[name] = {}
        for s in severities:
            if s not in range(1, len(values) + 1):
                raise FlatminimaError(f"severity must be in 1..{len(values)}, got {s!r}.")
            args = generator_args(num_samples, 0, dict(overrides))  # seed unused: states are replayed
            factor = None
            if param == "max_translation":  # scale the drawn translation instead (keeps the stream paired)
                factor = values[s - 1] / overrides.get(param, get_dataset_args().max_translation)
            else:
                setattr(args, param, values[s - 1])
            xs = _regenerate(base, args, cut, factor)
            out[name][s] = ((xs - arrays["mean"]) / arrays["std"], arrays["y_test"].copy())
    return out
