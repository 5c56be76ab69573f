from pathlib import Path

import pytest

from synthgap.config import (
    SECTIONS,
    EquivalenceConfig,
    TrainConfig,
    TrainReferenceConfig,
    load_stage_params,
    validate_section,
)
from synthgap.errors import UserError
from tests.conftest import REPO


def unwritten_keys(model: type, written: dict, where: str = "") -> list[str]:
    """Dotted keys of ``model`` (a config class) that the YAML mapping ``written`` leaves to the code's default."""
    from pydantic import BaseModel

    missing = []
    for name, field in model.model_fields.items():
        key = f"{where}.{name}" if where else name
        if name not in written:
            missing.append(key)
        elif isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) and isinstance(written[name], dict):
            missing += unwritten_keys(field.annotation, written[name], key)
    return missing


@pytest.mark.parametrize("path", [REPO / "params.yaml", *sorted((REPO / "params").glob("*.yaml"))],
                         ids=lambda p: p.name)
def test_every_setting_is_written_in_each_params_file(path: Path):
    """No default lives only in code: DVC tracks params.yaml, not config.py, so a default changed in code alone
    would rerun nothing."""
    import yaml

    from synthgap.config import CommonParams

    written = yaml.safe_load(path.read_text())
    missing = unwritten_keys(CommonParams, written)
    for section, model in SECTIONS.items():
        missing += unwritten_keys(model, written.get(section) or {}, section)
    assert missing == []


def test_unwritten_keys_finds_nested_gaps():
    assert unwritten_keys(TrainReferenceConfig, {"classifier": {"model": {}, "train": {"epochs": 3}}, "filter": None, "trials": 3}) == [
        *(f"classifier.model.{k}" for k in ("arch", "width", "vit_image_size", "shortcut", "init")),
        *(f"classifier.train.{k}" for k in TrainConfig.model_fields if k != "epochs"),
    ]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def error_of(path: Path, stage: str = "train_reference") -> str:
    with pytest.raises(UserError) as info:
        load_stage_params(stage, path)
    return info.value.line()


def test_repository_params_are_valid_for_every_stage():
    for stage in SECTIONS:
        params = load_stage_params(stage, REPO / "params.yaml")
        assert params.stage == stage
        assert params.data.name == "digits"


def test_defaults_follow_the_gafi_recipe():
    cfg = TrainConfig()
    assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.momentum, cfg.weight_decay) == (100, 128, 0.1, 0.9, 1e-4)
    assert cfg.milestones == (60, 80) and cfg.gamma == 0.1 and cfg.crop_padding == 4 and cfg.flip


def test_yaml_1_2_numbers_are_floats(tmp_path):
    params = load_stage_params("train_reference", write(tmp_path, "train_reference:\n  classifier:\n    train:\n      weight_decay: 1e-4\n"))
    assert params.section.classifier.train.weight_decay == pytest.approx(1e-4)


def test_unknown_nested_key_is_named(tmp_path):
    line = error_of(write(tmp_path, "train_reference:\n  classifier:\n    train:\n      lrr: 0.1\n"))
    assert line.startswith("synthgap: error: params.yaml: unknown key 'train_reference.classifier.train.lrr'")


def test_unknown_top_level_key_is_rejected(tmp_path):
    line = error_of(write(tmp_path, "trian_reference: {}\n"))
    assert "unknown key 'trian_reference'" in line and "known top-level keys" in line


def test_negative_learning_rate_names_key_value_and_range(tmp_path):
    line = error_of(write(tmp_path, "train_reference:\n  classifier:\n    train:\n      lr: -0.1\n"))
    assert "train_reference.classifier.train.lr = -0.1" in line
    assert "greater than 0" in line


def test_wrong_type_is_rejected(tmp_path):
    line = error_of(write(tmp_path, "train_reference:\n  classifier:\n    train:\n      epochs: ten\n"))
    assert "epochs = 'ten'" in line and "valid integer" in line
    line = error_of(write(tmp_path, "train_reference:\n  classifier:\n    train:\n      flip: 1\n"))
    assert "flip = 1" in line


def test_unknown_dataset_lists_the_choices(tmp_path):
    line = error_of(write(tmp_path, "data:\n  name: nosuch\n"))
    assert "data.name = 'nosuch'" in line and "'cifar10'" in line and "'digits'" in line


def test_milestones_must_lie_inside_the_run():
    with pytest.raises(UserError, match="milestones"):
        validate_section(TrainConfig, {"epochs": 10, "milestones": [5, 12]}, "x.")
    with pytest.raises(UserError, match="strictly increasing"):
        validate_section(TrainConfig, {"epochs": 10, "milestones": [6, 3]}, "x.")


def test_base_sizes_must_be_positive():
    with pytest.raises(UserError, match="each base size must be positive"):
        validate_section(EquivalenceConfig, {"base_sizes": [100, -5]}, "equivalence.")


def test_bad_device_and_bad_yaml(tmp_path):
    assert "device = 'gpu'" in error_of(write(tmp_path, "device: gpu\n"))
    assert "params.yaml line 2, column 1: " in error_of(write(tmp_path, "train_reference: [\n"))


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line of ``text`` that contains ``needle``."""
    return [i for i, line in enumerate(text.splitlines(), 1) if needle in line][nth - 1]


def test_yaml_syntax_error_names_line_and_column(tmp_path):
    text = "seed: 0\ntrials 3\ndevice: cpu\n"
    line = error_of(write(tmp_path, text))
    bad = line_of(text, "trials")
    assert f"params.yaml line {bad + 1}, column 1: could not find expected ':'" in line
    assert f"(while scanning a simple key at line {bad}, column 1)" in line
    text = "seed: 0\ntrain_reference:\n  classifier: {model: [1, 2}\n"
    line = error_of(write(tmp_path, text))
    row = line_of(text, "[1, 2")
    column = text.splitlines()[row - 1].index("}") + 1
    assert f"params.yaml line {row}, column {column}: expected ',' or ']', but got '}}'" in line
    assert line.count("\n") == 0


def test_duplicate_key_is_named_with_both_lines(tmp_path):
    text = "train_reference:\n  classifier:\n    train:\n      lr: 0.1\n      epochs: 3\n      lr: 0.2\n"
    line = error_of(write(tmp_path, text))
    first, second = line_of(text, "lr:"), line_of(text, "lr:", 2)
    column = text.splitlines()[second - 1].index("lr") + 1
    assert f"params.yaml line {second}, column {column}: duplicate key 'lr' (first at line {first}); keep only" in line


def test_sections_are_frozen():
    cfg = TrainReferenceConfig()
    with pytest.raises(Exception):
        cfg.classifier = None  # type: ignore[misc]


def test_flat_params_use_dotted_keys(tmp_path):
    flat = load_stage_params("train_reference", write(tmp_path, "seed: 3\n")).flat()
    assert flat["seed"] == 3
    assert flat["train_reference.classifier.train.lr"] == 0.1
    assert flat["train_reference.classifier.train.milestones"] == [60, 80]
    assert flat["data.name"] == "digits"


@pytest.mark.parametrize("text,key", [
    ("seed: 1180591620717411303424\n", "seed"),
    ("train_reference:\n  classifier: {train: {batch_size: 1180591620717411303424}}\n", "train_reference.classifier.train.batch_size"),
    ("equivalence:\n  base_sizes: [50, 18446744073709551616]\n", "equivalence.base_sizes.1"),
])
def test_integers_beyond_torchs_64_bits_are_refused_before_compute(tmp_path, text, key):
    stage = "augment" if text.startswith("equivalence") else "train_reference"
    section = "equivalence" if stage == "augment" else None
    with pytest.raises(UserError) as info:
        load_stage_params(stage, write(tmp_path, text), section=section)
    assert key in info.value.line() and ("64 bits" in info.value.line() or "less than or equal" in info.value.line())


def test_a_stand_in_too_narrow_for_its_group_norms_is_refused(tmp_path):
    path = write(tmp_path, "realfake:\n  pretrain: {width: 8}\n")
    with pytest.raises(UserError, match="realfake.pretrain.width = 8 is invalid"):
        load_stage_params("pretrain_base_model", path, section="realfake")
