"""The agent never starts half-configured: what the TOML points to is checked first."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agent.__main__ import run
from agent.config import load_config
from agent.sources import make_fifo
from swabline.tls import make_ca

REPO = Path(__file__).resolve().parents[2]


def write_config(
    tmp_path: Path, mqtt: str = "", outbox: Path | None = None, scanner: str = ""
) -> Path:
    conf = tmp_path / "station.toml"
    conf.write_text(
        'station_id = "st-1"\ndevelopment_raw_scans = true\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = 1\n{mqtt}\n'
        f'[scanner]\ntype = "stdin"\n{scanner}\n'
        f'[outbox]\npath = "{outbox or tmp_path / "state" / "outbox"}"\n'
    )
    return conf


def agent(conf: Path, *, check: bool) -> int:
    return run(argparse.Namespace(config=conf, check_config=check))


def test_a_complete_configuration_passes_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    ca = make_ca(tmp_path / "ca").cert
    conf = write_config(tmp_path, f'password_file = "{secret}"\nca_file = "{ca}"\n')
    assert agent(conf, check=True) == 0
    assert "OK (station st-1)" in capsys.readouterr().out


def _case(d: Path, name: str) -> tuple[str, str]:
    """One broken setup: the TOML lines and the message expected."""
    bad_pem = "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
    match name:
        case "missing-password":
            return (
                f'password_file = "{d}/missing"',
                f"mqtt.password_file: {d}/missing does not exist",
            )
        case "empty-password":
            (d / "empty").write_text("\n")
            return f'password_file = "{d}/empty"', f"mqtt.password_file: {d}/empty is empty"
        case "password-is-a-folder":
            (d / "folder").mkdir()
            return f'password_file = "{d}/folder"', f"mqtt.password_file: cannot read {d}/folder"
        case "missing-ca":
            return f'ca_file = "{d}/no-ca.crt"', f"mqtt.ca_file: {d}/no-ca.crt does not exist"
        case "garbage-ca":
            (d / "bad.crt").write_text(bad_pem)
            return f'ca_file = "{d}/bad.crt"', f"mqtt.ca_file: {d}/bad.crt is not a PEM certificate"
        case "binary-ca":
            (d / "key.bin").write_bytes(b"\xff\xfe")
            return f'ca_file = "{d}/key.bin"', f"mqtt.ca_file: {d}/key.bin is not a PEM certificate"
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name",
    [
        "missing-password",
        "empty-password",
        "password-is-a-folder",
        "missing-ca",
        "garbage-ca",
        "binary-ca",
    ],
)
def test_missing_or_unusable_files_are_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    line, expected = _case(tmp_path, name)
    conf = write_config(tmp_path, line)
    for check in (True, False):  # --check-config and a real start stop at the same place
        assert agent(conf, check=check) == 2
        assert expected in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # nothing was started, not even the outbox


def test_an_outbox_under_a_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "plain-file").write_text("")
    conf = write_config(tmp_path, outbox=tmp_path / "plain-file" / "sub" / "outbox.json")
    assert agent(conf, check=True) == 2
    assert f"outbox.path: {tmp_path}/plain-file is not a folder" in capsys.readouterr().err


def test_unknown_keys_and_wrong_types_name_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_config(tmp_path, 'keepalive_s = "thirty"\nbogus = 1\n')
    assert agent(conf, check=True) == 2
    err = capsys.readouterr().err
    assert "mqtt.keepalive_s" in err
    assert "mqtt.bogus: Extra inputs are not permitted" in err


def test_a_station_without_a_workflow_runs_only_if_raw_scans_are_asked_for_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conf = write_config(tmp_path)
    assert agent(conf, check=True) == 0  # development_raw_scans = true
    conf.write_text(conf.read_text().replace("development_raw_scans = true\n", ""))
    for check in (True, False):
        assert agent(conf, check=check) == 2
        err = capsys.readouterr().err
        assert "workflow: missing" in err and "development_raw_scans = true" in err
    conf.write_text(conf.read_text() + "\n[workflow]\ntube_patterns = ['T-\\d{6}']\n")
    assert agent(conf, check=True) == 0


def test_a_station_set_up_from_the_shipped_template_runs_the_sampling_workflow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    template = (REPO / "firmware_config" / "station.template.toml").read_text()
    assert '/var/lib/swabline/outbox"' in template  # a folder, named as one
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    conf = tmp_path / "station.toml"
    conf.write_text(  # what provisioning adds: the identity
        'station_id = "st-1"\n'
        + template.replace("/var/lib/swabline/outbox", str(tmp_path / "outbox")).replace(
            "[mqtt]\n", f'[mqtt]\nhost = "127.0.0.1"\npassword_file = "{secret}"\n'
        )
    )
    assert agent(conf, check=True) == 0, capsys.readouterr().err
    config = load_config(conf)
    assert config.workflow is not None and not config.development_raw_scans
    assert config.enrollment.servers  # the image pins the province's server


@pytest.mark.parametrize("kind", ["missing", "folder"])
def test_a_named_pipe_that_is_not_there_is_refused_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    pipe = tmp_path / "scans.fifo"
    if kind == "folder":
        pipe.mkdir()
    conf = write_config(tmp_path, scanner=f'path = "{pipe}"\n')
    expected = {
        "missing": f"scanner.path: {pipe} does not exist (make the named pipe with: mkfifo {pipe})",
        "folder": f"scanner.path: {pipe} is neither a named pipe nor a file",
    }[kind]
    for check in (True, False):
        assert agent(conf, check=check) == 2
        assert expected in capsys.readouterr().err
    if kind == "missing":
        make_fifo(pipe)
        assert agent(conf, check=True) == 0
