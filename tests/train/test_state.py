"""Resumable state: checksummed files, and the key that names them (only what defines the result)."""

import pytest
import torch

from synthgap.errors import UserError
from synthgap.train.state import load_state, restore, result_params, save_state, state_file


def saved_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    path = tmp_path / "state.pt"
    save_state(path, {"seed": 1}, step=3, model=model, history=[{"loss": 0.5}])
    return path, model


def test_an_intact_state_round_trips(tmp_path):
    path, model = saved_state(tmp_path)
    state = load_state(path, {"seed": 1}, "cpu")
    assert state["step"] == 3 and state["history"] == [{"loss": 0.5}]
    other = torch.nn.Linear(64, 64)
    restore(state, model=other)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_a_state_of_other_settings_is_not_resumed(tmp_path):
    path, _ = saved_state(tmp_path)
    assert load_state(path, {"seed": 2}, "cpu") is None
    assert load_state(tmp_path / "missing.pt", {"seed": 1}, "cpu") is None


@pytest.mark.parametrize("where", [0.5, 0.9, 0.1])
def test_flipped_bytes_fail_the_checksum(tmp_path, where):
    path, _ = saved_state(tmp_path)
    data = bytearray(path.read_bytes())
    start = int(len(data) * where)
    data[start : start + 400] = bytes(b ^ 0xFF for b in data[start : start + 400])
    path.write_bytes(bytes(data))
    with pytest.raises(UserError) as info:
        load_state(path, {"seed": 1}, "cpu")
    assert info.value.line() == (f"synthgap: error: {path} fails its checksum (corrupt or partly written); "
                                 "delete it to start this training over")


def test_truncated_and_foreign_files_fail_the_checksum(tmp_path):
    path, _ = saved_state(tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserError, match="fails its checksum"):
        load_state(path, {"seed": 1}, "cpu")
    torch.save({"fingerprint": {"seed": 1}, "step": 3}, path)  # a plain torch file: no checksum
    with pytest.raises(UserError, match="fails its checksum"):
        load_state(path, {"seed": 1}, "cpu")


FLAT = {"seed": 0, "device": "cpu", "tracking.uri": None, "train_reference.classifier.train.lr": 0.1}


def test_state_file_ignores_tracking_but_not_the_result_defining_params(tmp_path):
    key = state_file(tmp_path, "s", FLAT)
    assert state_file(tmp_path, "s", {**FLAT, "tracking.uri": "http://elsewhere:5000"}) == key
    assert state_file(tmp_path, "s", {**FLAT, "train_reference.classifier.train.lr": 0.2}) != key
    assert state_file(tmp_path, "t", FLAT) != key
    assert key.parent == tmp_path / ".synthgap" / "state"


def test_state_file_depends_on_the_device_type_only(tmp_path):
    here = "cuda" if torch.cuda.is_available() else "cpu"
    assert result_params({**FLAT, "device": "auto"})["device"] == here
    assert state_file(tmp_path, "s", {**FLAT, "device": "auto"}) == state_file(tmp_path, "s", {**FLAT, "device": here})
    if torch.cuda.is_available():
        assert state_file(tmp_path, "s", {**FLAT, "device": "cuda:0"}) == state_file(tmp_path, "s", {**FLAT, "device": "cuda"})
        assert state_file(tmp_path, "s", {**FLAT, "device": "cuda"}) != state_file(tmp_path, "s", FLAT)


def test_stage_params_differing_only_in_tracking_share_a_state_file(tmp_path):
    from synthgap.config import load_stage_params

    def flat(text):
        (tmp_path / "params.yaml").write_text(text)
        return load_stage_params("train_reference", tmp_path / "params.yaml").flat()

    a = flat("device: auto\n")
    b = flat(f"device: {'cuda' if torch.cuda.is_available() else 'cpu'}\ntracking: {{uri: 'file:///tmp/mlruns'}}\n")
    assert a != b and state_file(tmp_path, "s", a) == state_file(tmp_path, "s", b)
    assert state_file(tmp_path, "s", a) != state_file(tmp_path, "s", flat("seed: 1\n"))


def test_save_torch_bytes_depend_only_on_the_object(tmp_path):
    from synthgap.checkpoint import save_torch

    obj = {"w": torch.arange(6.0).reshape(2, 3), "settings": {"rank": 4}}
    save_torch(obj, tmp_path / "a.pt")
    save_torch(obj, tmp_path / "sub" / "b.pt")
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "sub" / "b.pt").read_bytes()
