"""Data misread at load: dtype, shape, label range and emptiness checked once, naming the file or factory."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from flatminima.data import load_file
from flatminima.train import fit
from flatminima.workflows.common import get_data, is_factory_name
from helpers import refused


@pytest.fixture
def factories(tmp_path, monkeypatch):
    (tmp_path / "my_data.py").write_text(textwrap.dedent("""
        import torch
        def empty():
            return torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)
        def huge_label():
            return torch.randn(8, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 10**9])
        def negative():
            return torch.randn(8, 3), torch.tensor([0, 1, -3, 1, 0, 1, 0, 1])
        def complex_x():
            return torch.randn(8, 3, dtype=torch.complex64), torch.tensor([0, 1] * 4)
        def half():
            return torch.randn(8, 3).bfloat16(), torch.tensor([0, 1] * 4)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    yield "my_data"
    sys.modules.pop("my_data", None)


@pytest.mark.parametrize("name,expected", [("pkg.mod:fn", True), ("my_data:empty", True), ("data.npz", False),
                                           ("dir/x:y.csv", False), ("a:b.pt", False), ("mnist1d", False)])
def test_factory_names_are_not_read_as_files(name, expected):
    assert is_factory_name(name) is expected


def test_a_dotted_factory_is_imported_not_opened():
    msg = refused(lambda: get_data("nosuchpkg.mod:fn"), "data factory 'nosuchpkg.mod:fn'")
    assert "does not exist" not in msg


@pytest.mark.parametrize("attr,fragments", [
    ("empty", ["data factory 'my_data:empty'", "empty train part"]),
    ("huge_label", ["labels go up to 1000000000", "100000"]),
    ("negative", ["labels must be ≥ 0"]),
    ("complex_x", ["complex64", "real-valued"]),
])
def test_factory_results_are_checked(factories, attr, fragments):
    refused(lambda: get_data(f"my_data:{attr}"), *fragments)


def test_a_bfloat16_factory_is_read_as_float32(factories):
    assert get_data("my_data:half").x_train.dtype == torch.float32


def _pt(tmp_path, **arrays):
    path = tmp_path / "d.pt"
    torch.save(arrays, path)
    return path


def test_pt_bfloat16_inputs_are_read_as_float32(tmp_path):
    d = load_file(_pt(tmp_path, x_train=torch.randn(10, 3).bfloat16(), y_train=torch.tensor([0, 1] * 5)))
    assert d.x_train.dtype == torch.float32


@pytest.mark.parametrize("arrays,fragments", [
    ({"x_train": torch.randn(10, 3).to_sparse(), "y_train": torch.tensor([0, 1] * 5)},
     ["'x_train' is a sparse", "to_dense"]),
    ({"x_train": torch.randn(10, 3), "y_train": ["a", "b"] * 5}, ["'y_train' holds a list", "numeric tensors"]),
    ({"x_train": torch.randn(10, 3, dtype=torch.complex64), "y_train": torch.tensor([0, 1] * 5)}, ["complex64"]),
    ({}, ["empty dict"]),
    ({"x_train": torch.randn(10, 3), "y_train": torch.tensor([0, 1] * 4 + [1, 10**9])},
     ["labels go up to 1000000000"]),
])
def test_pt_contents_are_checked(tmp_path, arrays, fragments):
    refused(lambda: load_file(_pt(tmp_path, **arrays)), "d.pt" if arrays else "empty", *fragments)


def test_a_csv_with_a_huge_label_is_refused(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(9)) + "1,2,1000000000\n")
    refused(lambda: load_file(path), "labels go up to 1000000000", "renumber the classes")


def test_a_csv_label_beyond_int64_is_refused_as_class_labels(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(9)) + "1,1e30\n")
    refused(lambda: load_file(path, task="classification"), "labels go up to 1e+30")


def test_npz_labels_beyond_any_classifier_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.random.randn(10, 3), y_train=np.array([0, 1] * 4 + [1, 5 * 10**6]))
    refused(lambda: load_file(path), "labels go up to 5000000")


def test_float_targets_stay_a_regression():
    d = get_data("two_class")
    x = d.x_train[:20]
    from flatminima.data.files import infer_task

    assert infer_task(np.linspace(0, 1, 20))[0] == "regression" and len(x) == 20


def test_fit_names_labels_beyond_the_models_outputs():
    model = torch.nn.Linear(3, 2)
    refused(lambda: fit(model, (torch.randn(8, 3), torch.tensor([0, 1, 5, 1, 0, 1, 0, 1])), {"epochs": 1},
                         progress=False), "class labels run from 0 to 5", "2 outputs per sample")


def test_fit_names_float_labels_for_cross_entropy():
    refused(lambda: fit(torch.nn.Linear(3, 2), (torch.randn(8, 3), torch.ones(8)), {"epochs": 1}, progress=False),
             "labels have dtype torch.float32", "loss='mse'")
