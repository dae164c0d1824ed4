"""Configuration as data: round trips through dicts and files, overrides, and refusals."""

import json
import math

import pytest

from posert.config import BackendConfig, CorrectionConfig, PipelineConfig, RefinerConfig

CUSTOM = PipelineConfig(max_streams=16, backend=BackendConfig(name="onnxruntime", precision="int8", workers=1),
                        refiner=RefinerConfig(steps=3, hypotheses=2, seed=7, mean_ema=0.5),
                        correction=CorrectionConfig(mode="given", lateral_ema=0.25, bone_view_cap=math.inf,
                                                    distance_index=0.0))


def test_dict_and_file_round_trips(tmp_path):
    """to_dict → from_dict, and TOML (to_toml, the ``posert config`` output), JSON and YAML files
    give back an equal config, ∞ included; a file that names a few keys keeps the other defaults."""
    assert PipelineConfig.from_dict(CUSTOM.to_dict()) == CUSTOM
    assert PipelineConfig.from_dict(PipelineConfig().to_dict()) == PipelineConfig()
    (tmp_path / "c.toml").write_text(CUSTOM.to_toml())
    (tmp_path / "c.json").write_text(json.dumps(CUSTOM.to_dict()))
    for name in ("c.toml", "c.json"):
        assert PipelineConfig.from_file(tmp_path / name) == CUSTOM
    yaml = pytest.importorskip("yaml")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(CUSTOM.to_dict()))
    assert PipelineConfig.from_file(tmp_path / "c.yaml") == CUSTOM
    (tmp_path / "few.toml").write_text('max_streams = 3\n[correction]\nmode = "off"\n')
    few = PipelineConfig.from_file(tmp_path / "few.toml")
    assert few.max_streams == 3 and few.correction == CorrectionConfig(mode="off") and few.backend == BackendConfig()


def test_override_replaces_only_the_given_fields():
    cfg = CUSTOM.override({"backend.name": "torch", "refiner.steps": None, "max_streams": 4})
    assert cfg.backend.name == "torch" and cfg.backend.precision == "int8" and cfg.refiner.steps == 3
    assert cfg.max_streams == 4 and cfg.correction == CUSTOM.correction
    with pytest.raises(ValueError, match="unknown config key"):
        cfg.override({"backend.colour": "red"})


@pytest.mark.parametrize("data,match", [
    ({"backend": {"name": "fastest"}}, "backend.name"),
    ({"backend": {"workers": 3}}, "backend.workers"),
    ({"refiner": {"hypotheses": 0}}, "refiner.hypotheses"),
    ({"refiner": {"mean_ema": 1.5}}, "refiner.mean_ema"),
    ({"correction": {"bone_view_cap": 0.5}}, "correction.bone_view_cap"),
    ({"correction": {"noise_min_joints": 2.5}}, "correction.noise_min_joints"),
    ({"correction": {"bone_depth": "yes"}}, "correction.bone_depth"),
    ({"correction": {"bone_colour": 1}}, "bone_colour"),
    ({"max_streams": 0}, "max_streams"),
    ({"streams": 4}, "unknown config keys"),
    ({"correction": 3}, "mapping"),
])
def test_bad_values_and_keys_are_refused_by_name(data, match):
    with pytest.raises(ValueError, match=match):
        PipelineConfig.from_dict(data)


def test_bad_files_are_refused_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config file"):
        PipelineConfig.from_file(tmp_path / "missing.toml")
    (tmp_path / "c.ini").write_text("[backend]\n")
    with pytest.raises(ValueError, match=r"\.toml"):
        PipelineConfig.from_file(tmp_path / "c.ini")
    (tmp_path / "broken.toml").write_text("[backend\nname = 1")
    with pytest.raises(ValueError, match="broken.toml"):
        PipelineConfig.from_file(tmp_path / "broken.toml")
    (tmp_path / "bad.json").write_text('{"refiner": {"steps": -1}}')
    with pytest.raises(ValueError, match=r"bad\.json: refiner\.steps"):
        PipelineConfig.from_file(tmp_path / "bad.json")


def test_config_command_prints_the_defaults_as_toml(capsys, tmp_path):
    from posert.cli import main

    assert main(["config"]) == 0
    path = tmp_path / "defaults.toml"
    path.write_text(capsys.readouterr().out)
    assert PipelineConfig.from_file(path) == PipelineConfig()
