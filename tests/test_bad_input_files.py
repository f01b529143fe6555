"""Files that are not what they claim: garbage, empty or non-tensor checkpoints; a folder, a binary file or a
Latin-1 file given as a study spec; each named, with what to do."""

from __future__ import annotations

import pytest
import torch

from flatminima.study.spec import load
from flatminima.train import load_checkpoint
from flatminima.workflows.common import check_checkpoint
from helpers import refused


@pytest.mark.parametrize("write,fragments", [
    (lambda p: p.write_bytes(b""), ["is empty (0 bytes)"]),
    (lambda p: p.write_bytes(b"\x00garbage\xff" * 40), ["damaged, not a torch.save file"]),
    (lambda p: p.write_text("not a checkpoint\n"), ["damaged, not a torch.save file"]),
    (lambda p: torch.save(5, p), ["holds a int, not a state dict"]),
    (lambda p: torch.save([torch.zeros(2)], p), ["holds a list"]),
    (lambda p: torch.save({"weight": 1, "bias": 2}, p), ["not a state dict", "'weight' (int)"]),
    (lambda p: torch.save({}, p), ["empty state dict"]),
])
def test_bad_checkpoint_files_are_named(tmp_path, write, fragments):
    path = tmp_path / "ck.pt"
    write(path)
    refused(lambda: load_checkpoint(path), "ck.pt", *fragments)


def test_a_folder_given_as_a_checkpoint(tmp_path):
    refused(lambda: load_checkpoint(tmp_path), "is a folder")


def test_a_checkpoint_of_another_model_is_named(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save(torch.nn.Linear(3, 2).state_dict(), path)
    refused(lambda: check_checkpoint(str(path), torch.nn.Linear(4, 2)), "does not fit the model", "mis-shaped")


def test_a_folder_as_a_spec(tmp_path):
    refused(lambda: load(tmp_path), "is a folder")


def test_a_binary_file_as_a_spec(tmp_path):
    path = tmp_path / "spec.toml"
    torch.save({"w": torch.zeros(3)}, path)
    refused(lambda: load(path), "is a binary file")


def test_a_latin1_spec_names_the_encoding(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    refused(lambda: load(path), "is not UTF-8 text", "0xe9", "save it again as UTF-8")


def test_a_utf8_spec_with_accents_still_loads(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text('name = "cafe"\n# caf\u00e9\n[data]\nname = "two_class"\nshifts = "none"\n', encoding="utf-8")
    assert load(path).name == "cafe"


def test_a_spec_that_is_not_toml(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text("this is = = not toml")
    refused(lambda: load(path), "is not valid TOML")
