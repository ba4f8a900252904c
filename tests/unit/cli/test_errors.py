"""A person who mistypes a setting or a flag gets one line naming it, exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.cli.main import app

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no streamscore.toml of the checkout is read
    return tmp_path


def _invoke(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, args, env=env)
    return result.exit_code, result.output


def _one_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    assert lines[0].startswith("error: ")
    return lines[0]


def test_a_misspelt_key_in_the_toml_file(in_tmp: Path) -> None:
    (in_tmp / "streamscore.toml").write_text('[kafka]\nbootstrap_serverz = "x:1"\n')
    code, out = _invoke(["status"])
    assert code == 2
    assert "unknown setting 'kafka.bootstrap_serverz'" in _one_line(out)


def test_a_misspelt_section_in_the_environment_is_refused(in_tmp: Path) -> None:
    code, out = _invoke(["status"], env={"STREAMSCORE_KAFAK__BOOTSTRAP_SERVERS": "x:1"})
    assert code == 2
    line = _one_line(out)
    assert "STREAMSCORE_KAFAK__BOOTSTRAP_SERVERS" in line and "'kafak'" in line


def test_an_unknown_top_level_variable_is_refused(in_tmp: Path) -> None:
    code, out = _invoke(["status"], env={"STREAMSCORE_LOGLEVEL": "INFO"})
    assert code == 2 and "STREAMSCORE_LOGLEVEL" in _one_line(out)


def test_a_misspelt_nested_variable_names_the_setting(in_tmp: Path) -> None:
    code, out = _invoke(["status"], env={"STREAMSCORE_PROCESSOR__MAX_BATCHES": "5"})
    assert code == 2 and "max_batches" in _one_line(out)


def test_a_config_file_that_does_not_exist(in_tmp: Path) -> None:
    code, out = _invoke(["--config", "nope.toml", "status"])
    assert code == 2 and "config file nope.toml does not exist" in _one_line(out)


def test_invalid_toml_names_the_file(in_tmp: Path) -> None:
    bad = in_tmp / "bad.toml"
    bad.write_text("[kafka\nbootstrap_servers = 1\n")
    code, out = _invoke(["--config", str(bad), "status"])
    assert code == 2 and "bad.toml is not valid TOML" in _one_line(out)


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--input-format", "xml"], "invalid setting formats.events = 'xml'"),
        (["--max-batch", "0"], "invalid setting processor.max_batch = 0"),
    ],
)
def test_invalid_flag_values(in_tmp: Path, flags: list[str], expected: str) -> None:
    code, out = _invoke(["run", *flags])
    assert code == 2 and expected in _one_line(out)


def test_a_redis_url_without_a_scheme(in_tmp: Path) -> None:
    code, out = _invoke(["status"], env={"STREAMSCORE_REDIS__URL": "localhost:6379"})
    assert code == 2 and "redis.url" in _one_line(out) and "redis://" in out


def test_debug_logging_shows_the_traceback(in_tmp: Path) -> None:
    code, out = _invoke(["--log-level", "DEBUG", "--config", "nope.toml", "status"])
    assert code == 2 and "Traceback" in out


def test_help_does_not_import_the_heavy_parts(in_tmp: Path) -> None:
    probe = (
        "import sys; from streams.cli.main import app; from typer.main import get_command;"
        "get_command(app)(['--help'], standalone_mode=False);"
        "print(sorted(m for m in ('mlflow', 'onnxruntime', 'sklearn', 'faust', 'matplotlib')"
        " if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_test_suites_own_variables_are_not_settings_and_not_refused() -> None:
    from schemas.errors import ConfigError
    from schemas.settings import check_environment

    check_environment({"STREAMSCORE_TEST_KAFKA": "127.0.0.1:1", "STREAMSCORE_TEST_REDIS": "x"})
    with pytest.raises(ConfigError, match="STREAMSCORE_TESTS"):
        check_environment({"STREAMSCORE_TESTS": "1"})


def test_bench_broker_refuses_a_rate_below_one(in_tmp: Path) -> None:
    code, out = _invoke(["bench-broker", "--rate", "0"])
    assert code == 2 and "--rate" in _one_line(out)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["bench-broker", "--rat", "5"], "No such option: --rat (Possible options: --rate)"),
        (["models", "promte"], "No such command 'promte'. Did you mean 'promote'?"),
        (["--bogus", "status"], "No such option: --bogus (streamscore --help lists them)"),
        (["drift", "bench", "--seed", "x"], "Invalid value for '--seed'"),
    ],
)
def test_a_mistyped_flag_or_command_is_one_line(
    in_tmp: Path, args: list[str], expected: str
) -> None:
    code, out = _invoke(args)
    assert code == 2 and expected in _one_line(out)


def test_a_mistyped_stage_variant_of_the_bench_is_refused_before_it_runs(in_tmp: Path) -> None:
    code, out = _invoke(["bench", "--stage", "decode off", "--stage", "decoder off"])
    assert code == 2
    line = _one_line(out)
    assert "--stage 'decoder off': no such variant" in line and "'decode off'" in line
