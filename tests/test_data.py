"""Data: MNIST-1D equals the generator's own output; each shift and corruption grows with its severity;
two-class separation; user files checked and wrong ones refused clearly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flatminima.data import CORRUPTIONS, MNIST1D_SHIFTS, corrupt, load, load_file, mnist1d_arrays
from flatminima.errors import FlatminimaError


@pytest.fixture(scope="module")
def mnist_small():
    return load("mnist1d", num_samples=200, shifts=True)


@pytest.fixture(scope="module")
def digits():
    return load("digits", shifts=True)


def test_mnist1d_matches_generator_and_keeps_numpy_state():
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 200
    ref = make_dataset(args)
    np.random.seed(123)
    before = np.random.rand()
    np.random.seed(123)
    mine = mnist1d_arrays(200)
    assert np.random.rand() == before  # the generator's reseeding did not leak
    for key in ("x", "y", "x_test", "y_test"):
        assert np.array_equal(ref[key], mine[key])


@pytest.mark.parametrize("name", sorted(MNIST1D_SHIFTS))
def test_mnist1d_shift_grows_with_severity(mnist_small, name):
    sev = mnist_small.shifts[name]
    assert sorted(sev) == [1, 2, 3, 4, 5]
    dist = [float((sev[s][0] - mnist_small.x_test).abs().mean()) for s in range(1, 6)]
    assert all(a < b for a, b in zip(dist, dist[1:], strict=False)), dist
    assert dist[0] > 0
    for s in range(1, 6):  # paired: the same test samples and labels
        assert torch.equal(sev[s][1], mnist_small.y_test)
        assert sev[s][0].shape == mnist_small.x_test.shape


def test_mnist1d_shift_at_default_parameter_is_the_clean_test_set():
    """Regenerating test samples from their recorded RNG states with unchanged parameters reproduces them."""
    from flatminima.data.mnist1d_shifts import SHIFTS, mnist1d_shifts

    arrays = mnist1d_arrays(100)
    saved = SHIFTS["shear"]
    SHIFTS["shear"] = ("shear_scale", (0.75,))  # the default: no shift at all
    try:
        out = mnist1d_shifts(arrays, {}, ["shear"], severities=(1,))
    finally:
        SHIFTS["shear"] = saved
    assert np.allclose(out["shear"][1][0], arrays["x_test"], atol=1e-12)


def test_mnist1d_iid_noise_shift_adds_only_noise(mnist_small):
    """Same draws, larger iid scale: the difference to the clean signal scales with (σ_s − σ_0)."""
    d1 = mnist_small.shifts["iid_noise"][1][0] - mnist_small.x_test
    d5 = mnist_small.shifts["iid_noise"][5][0] - mnist_small.x_test
    s0, (v1, v5) = 0.02, (MNIST1D_SHIFTS["iid_noise"][1][0], MNIST1D_SHIFTS["iid_noise"][1][4])
    assert torch.allclose(d5, d1 * (v5 - s0) / (v1 - s0), atol=1e-4)


def test_digits_shape_range_and_split(digits):
    assert digits.input_shape == (1, 8, 8)
    assert len(digits.x_train) + len(digits.x_test) == 1797
    assert float(digits.x_train.min()) >= 0 and float(digits.x_train.max()) <= 1
    assert digits.num_classes == 10


@pytest.mark.parametrize("name", sorted(CORRUPTIONS))
def test_corruption_grows_with_severity(digits, name):
    dist = [float((digits.shifts[name][s][0] - digits.x_test).abs().mean()) for s in range(1, 6)]
    assert dist[0] > 0
    assert all(a < b for a, b in zip(dist, dist[1:], strict=False)), dist


def test_corruptions_do_what_they_say(digits):
    x = digits.x_test.numpy().astype(np.float64)
    # contrast: deviation from each image's mean scaled by the level exactly
    c = corrupt(x, "contrast", 3)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    assert np.allclose(c - mean, 0.45 * (x - mean), atol=1e-6)
    # occlusion: nested squares, so a higher severity zeroes a superset of pixels
    z = [corrupt(x, "occlusion", s) == 0 for s in range(1, 6)]
    assert all(np.all(a <= b) for a, b in zip(z, z[1:], strict=False))
    # gaussian noise (before clipping) has the level as its standard deviation: check on a mid-grey image
    grey = np.full((2000, 1, 8, 8), 0.5)
    assert abs(np.std(corrupt(grey, "gaussian_noise", 2) - grey) - 0.08) < 0.003
    # rotation keeps the image shape
    assert corrupt(x, "rotation", 5).shape == x.shape


def test_corrupt_rejects_bad_severity_and_name():
    x = np.zeros((2, 1, 8, 8))
    with pytest.raises(FlatminimaError, match="severity"):
        corrupt(x, "blur", 6)
    with pytest.raises(FlatminimaError, match="unknown corruption"):
        corrupt(x, "fog", 1)


@pytest.mark.parametrize("sep", [0.1, 2.0])
def test_two_class_gap_is_the_separation(sep):
    d = load("two_class", num_samples=400, separation=sep, dim=3)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.cat([d.y_train, d.y_test])
    gap = float(x[y == 1, 0].min() - x[y == 0, 0].max())
    assert gap >= sep - 1e-6 and gap < sep + 0.05
    assert d.input_shape == (3,) and d.num_classes == 2


def test_unknown_dataset_and_option_named():
    with pytest.raises(FlatminimaError, match="unknown data set"):
        load("cifar")
    with pytest.raises(FlatminimaError, match="separation"):
        load("two_class", seperation=1.0)
    with pytest.raises(FlatminimaError, match="unknown shifts"):
        load("digits", shifts=["fog"])


def _arrays(n=30, d=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, 3, n)


def test_npz_csv_pt_roundtrip(tmp_path):
    x, y = _arrays()
    np.savez(tmp_path / "d.npz", x_train=x[:20], y_train=y[:20], x_test=x[20:], y_test=y[20:])
    torch.save({"x_train": torch.tensor(x[:20]), "y_train": torch.tensor(y[:20]),
                "x_test": torch.tensor(x[20:]), "y_test": torch.tensor(y[20:])}, tmp_path / "d.pt")
    rows = ["f0,f1,f2,f3,label,split"] + [",".join(f"{v:.9g}" for v in x[i]) + f",{y[i]},"
                                          + ("train" if i < 20 else "test") for i in range(30)]
    (tmp_path / "d.csv").write_text("\n".join(rows))
    for suffix in ("npz", "pt", "csv"):
        d = load_file(str(tmp_path / f"d.{suffix}"))
        assert torch.allclose(d.x_train, torch.tensor(x[:20]), atol=1e-6)
        assert torch.equal(d.y_test, torch.tensor(y[20:]))
        assert d.num_classes == int(y.max()) + 1
    d = load_file(str(tmp_path / "d.npz"), input_shape=(1, 2, 2))
    assert d.input_shape == (1, 2, 2)


def test_split_made_when_no_test_arrays(tmp_path):
    x, y = _arrays(50)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    d = load_file(str(tmp_path / "d.npz"), test_fraction=0.2)
    assert len(d.x_train) == 40 and len(d.x_test) == 10


@pytest.mark.parametrize("arrays,match", [
    (dict(x_train=np.zeros((5, 4)), y_train=np.zeros(5, int), x_test=np.zeros((3, 5)),
          y_test=np.zeros(3, int)),
     r"train inputs have per-sample shape \(4,\) but test inputs \(5,\)"),
    (dict(x_train=np.zeros((5, 4)), y_train=np.zeros(4, int)), "5 inputs but 4 labels"),
    (dict(x_train=np.zeros((5, 4)), y_train=np.full(5, np.inf)), "targets contain NaN or infinite"),  # regression
    (dict(x_train=np.zeros((5, 4)), y_train=np.zeros((5, 3), int)), "1-D class indices"),
    (dict(x_train=np.full((5, 4), np.nan), y_train=np.zeros(5, int)), "NaN"),
    (dict(y_train=np.zeros(5, int)), "no array 'x_train'"),
])
def test_bad_files_refused_clearly(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(FlatminimaError, match=match):
        load_file(str(tmp_path / "bad.npz"))


def test_wrong_input_shape_refused(tmp_path):
    x, y = _arrays(10, 40)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=y)
    with pytest.raises(FlatminimaError, match=r"per-sample shape \(40,\).*input_shape \(1, 8, 8\)"):
        load_file(str(tmp_path / "d.npz"), input_shape=(1, 8, 8))


def test_unsafe_or_unknown_files_refused(tmp_path):
    torch.save({"x_train": torch.zeros(3, 2), "y_train": torch.zeros(3, dtype=torch.int64),
                "meta": FlatminimaError("code object")}, tmp_path / "evil.pt")
    with pytest.raises(FlatminimaError, match="weights_only"):
        load_file(str(tmp_path / "evil.pt"))
    np.savez(tmp_path / "obj.npz", x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1, int))
    with pytest.raises(FlatminimaError, match="pickle"):
        load_file(str(tmp_path / "obj.npz"))
    (tmp_path / "d.txt").write_text("1,2")
    with pytest.raises(FlatminimaError, match="suffix"):
        load_file(str(tmp_path / "d.txt"))
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(FlatminimaError, match="no label column"):
        load_file(str(tmp_path / "d.csv"))
