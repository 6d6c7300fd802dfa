"""Configuration: the shipped file equals the defaults; errors name key path and value."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from climbd.cli import main
from climbd.config import Config, load_config, parse_config, resolve_state_dir, with_overrides
from climbd.errors import ConfigError

pytestmark = pytest.mark.unit

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "climbd.toml"


def _leaf_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    out = set()
    for name, field in model.model_fields.items():
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out |= _leaf_paths(ann, prefix + name + ".")
        else:
            out.add(prefix + name)
    return out


def _file_paths(data: dict, prefix: str = "") -> set[str]:
    out = set()
    for k, v in data.items():
        if isinstance(v, dict) and k not in ("options",):
            out |= _file_paths(v, prefix + k + ".")
        else:
            out.add(prefix + k)
    return out


def test_shipped_config_loads_to_exactly_the_defaults() -> None:
    assert load_config(SHIPPED) == Config()


def test_shipped_config_sets_every_key() -> None:
    """Every setting appears in the shipped file, so it documents all of them."""
    data = tomllib.loads(SHIPPED.read_text())
    missing = _leaf_paths(Config) - _file_paths(data)
    # list-of-table settings (e.g. gpio buttons) are shown as commented examples
    missing = {m for m in missing if not m.endswith(".buttons")}
    assert not missing, f"keys missing from config/climbd.toml: {sorted(missing)}"


def test_every_key_in_the_shipped_file_has_a_comment() -> None:
    lines = SHIPPED.read_text().splitlines()
    for i, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#") and not line.startswith("["):
            above = lines[i - 1].strip() if i else ""
            assert above.startswith("#") or "=" in above, f"line {i + 1} undocumented: {line}"


def test_unknown_key_is_reported_with_its_path(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[capture]\nsource = "x.mp4"\nframerate = 30\n')
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert err.value.problems == [("capture.framerate", "unknown key", 30)]
    assert "capture.framerate: unknown key (got 30)" in str(err.value)


def test_bad_value_is_reported_with_path_and_value() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"capture": {"fps": -3}, "server": {"port": 70000}})
    paths = {p for p, _, _ in err.value.problems}
    assert paths == {"capture.fps", "server.port"}
    assert "(got -3)" in str(err.value) and "(got 70000)" in str(err.value)


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("[capture\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.toml")


def test_command_line_overrides_win() -> None:
    c = with_overrides(Config(), {"capture.source": "clip.mp4", "server.port": 0,
                                  "capture.loop": None})
    assert c.capture.source == "clip.mp4" and c.server.port == 0 and c.capture.loop is False
    with pytest.raises(ConfigError, match=r"server\.port"):
        with_overrides(Config(), {"server.port": -1})


def test_state_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/climbd:/var/lib/other")
    assert resolve_state_dir(tmp_path) == tmp_path
    assert resolve_state_dir(None) == Path("/var/lib/climbd")
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert resolve_state_dir(None) == tmp_path / "climbd"


def test_check_config_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", str(SHIPPED)]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[pose]\nmodel_complexity = 2\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "pose.model_complexity" in err and "(got 2)" in err
