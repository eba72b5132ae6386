"""`swabline provision` on the station: files all or nothing, with tight permissions."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from agent.config import StationConfig, load_config
from agent.errors import ConfigError, ProvisionError
from agent.fakes import FakeScanSource, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Signal
from agent.provision import (
    HttpEnroller,
    Target,
    enroll_by_hand,
    load_template,
    provision,
    server_allowed,
    template_config,
    wait_for_card,
)
from protocol.cards import EnrollmentCard
from protocol.enrollment import BrokerCredentials, EnrollRequest, EnrollResponse
from swabline.tls import make_ca
from tests.agent.test_outbox import record

REPO = Path(__file__).resolve().parents[2]


class FakeEnroller:
    """Answers like the server: one station per valid token, refusals with a reason."""

    def __init__(self, ca_pem: str | None, *, seq_floor: int = 0) -> None:
        self.ca_pem = ca_pem
        self.seq_floor = seq_floor
        self.requests: list[tuple[str, EnrollRequest]] = []
        self.valid = {"good-token-0123456789"}

    def enroll(self, server_url: str, request: EnrollRequest) -> EnrollResponse:
        self.requests.append((server_url, request))
        if request.token not in self.valid:
            raise ProvisionError("the server refused: unknown enrollment token")
        self.valid.discard(request.token)
        return EnrollResponse(
            station_id="hn-cau-giay-07",
            facility="hn-cau-giay",
            mqtt=BrokerCredentials(
                host="mqtt.example.org",
                port=8883,
                username="hn-cau-giay-07",
                password="p" * 43,
                ca_pem=self.ca_pem,
            ),
            seq_floor=self.seq_floor,
            server_time=0.0,
        )


@pytest.fixture
def target(tmp_path: Path) -> Target:
    etc = tmp_path / "etc"
    etc.mkdir()
    template = tmp_path / "station.template.toml"
    template.write_text(
        (REPO / "firmware_config/station.template.toml")
        .read_text()
        .replace("/var/lib/swabline/outbox", str(tmp_path / "state" / "outbox"))
    )
    return Target(out=etc / "station.toml", template=load_template(template))


@pytest.fixture
def ca_pem(tmp_path: Path) -> str:
    return make_ca(tmp_path / "ca").cert.read_text()


def load_template_config(target: Target) -> StationConfig:
    return template_config(target.template, source="template")


def listing(folder: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}


def test_provisioning_writes_a_valid_configuration_and_private_secrets(
    target: Target, ca_pem: str
) -> None:
    answer = provision(
        server_url="https://s.example.org",
        token="good-token-0123456789",
        target=target,
        enroller=FakeEnroller(ca_pem),
    )
    assert answer.station_id == "hn-cau-giay-07"
    assert listing(target.folder) == {
        "station.toml": 0o600,
        "mqtt-password": 0o600,
        "ca.crt": 0o644,
    }
    config = load_config(target.out)
    assert config.station_id == "hn-cau-giay-07"
    assert (config.mqtt.host, config.mqtt.port) == ("mqtt.example.org", 8883)
    assert config.mqtt.password_file == target.folder / "mqtt-password"
    assert config.mqtt.ca_file == target.folder / "ca.crt"
    assert config.mqtt.username is None  # the station id, as the broker requires
    assert config.mqtt.heartbeat_s == 10  # the template's settings are kept
    assert (target.folder / "mqtt-password").read_text() == "p" * 43 + "\n"


def test_a_refused_token_writes_nothing(target: Target, ca_pem: str) -> None:
    with pytest.raises(ProvisionError, match="unknown enrollment token"):
        provision(
            server_url="https://s.example.org",
            token="forged-token-000000000",
            target=target,
            enroller=FakeEnroller(ca_pem),
        )
    assert listing(target.folder) == {}


def test_a_failure_while_installing_puts_the_previous_files_back(
    target: Target, ca_pem: str
) -> None:
    (target.folder / "mqtt-password").write_text("old password\n")
    target.out.mkdir()  # station.toml cannot be replaced: the last rename fails
    with pytest.raises(ProvisionError, match="cannot write the station's files"):
        provision(
            server_url="https://s.example.org",
            token="good-token-0123456789",
            target=target,
            enroller=FakeEnroller(ca_pem),
        )
    assert (target.folder / "mqtt-password").read_text() == "old password\n"
    assert sorted(listing(target.folder)) == ["mqtt-password", "station.toml"]  # no temp files
    assert not (target.folder / "ca.crt").exists()


def test_a_server_handing_out_a_broken_ca_is_caught_before_writing(target: Target) -> None:
    with pytest.raises(ConfigError, match="not a PEM certificate"):
        provision(
            server_url="https://s.example.org",
            token="good-token-0123456789",
            target=target,
            enroller=FakeEnroller(
                "-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"
            ),
        )
    assert listing(target.folder) == {}


def test_reprovisioning_continues_the_record_numbers_and_sets_aside_another_station(
    target: Target, ca_pem: str, tmp_path: Path
) -> None:
    outbox_path = tmp_path / "state" / "outbox"
    outbox_path.parent.mkdir()
    with TinyDbOutbox(outbox_path) as outbox:
        outbox.learn_seq_floor(0)  # as the server's Sync would
        outbox.append(record(1).model_copy(update={"station_id": "old-station-01"}))
    provision(
        server_url="https://s.example.org",
        token="good-token-0123456789",
        target=target,
        enroller=FakeEnroller(ca_pem, seq_floor=41),
    )
    aside = outbox_path.with_name("outbox.old-station-01.undelivered")
    with TinyDbOutbox(aside) as kept:
        assert len(kept) == 1
    with TinyDbOutbox(outbox_path) as outbox:
        assert len(outbox) == 0 and outbox.last_seq() == 41


def test_credentials_never_travel_over_plain_http_to_another_host() -> None:
    enroller = HttpEnroller(timeout_s=1)
    with pytest.raises(ProvisionError, match="plain HTTP"):
        enroller.enroll("http://swabline.example.org", EnrollRequest(token="t" * 20))


def test_a_template_may_not_carry_an_identity(tmp_path: Path) -> None:
    bad = tmp_path / "t.toml"
    bad.write_text('station_id = "x"\n[scanner]\ntype = "stdin"\n')
    with pytest.raises(ConfigError, match="station_id is set by enrollment"):
        load_template(bad)
    bad.write_text('[mqtt]\npassword_file = "/x"\n[scanner]\ntype = "stdin"\n')
    with pytest.raises(ConfigError, match=r"mqtt\.password_file is set by enrollment"):
        load_template(bad)
    bad.write_text('[scanner]\ntype = "laser"\n')
    with pytest.raises(ConfigError, match="scanner"):
        load_template(bad)


def test_waiting_for_a_card_refuses_other_codes_and_bad_cards_then_enrolls(
    target: Target, ca_pem: str
) -> None:
    good = EnrollmentCard("https://s.example.org", "good-token-0123456789").encode()
    forged = EnrollmentCard("https://s.example.org", "forged-token-000000000").encode()
    feedback = RecordingFeedback()
    enroller = FakeEnroller(ca_pem)
    answer = wait_for_card(
        sources=[FakeScanSource(["KG-RG-000123", "SWABLINE:ENROLL:1?token=x", forged, good])],
        feedback=feedback,
        stop=threading.Event(),
        attempt=lambda card: provision(
            server_url=card.server_url, token=card.token, target=target, enroller=enroller
        ),
    )
    assert answer is not None and answer.station_id == "hn-cau-giay-07"
    assert feedback.signals == [Signal.REJECTED, Signal.REJECTED, Signal.REJECTED, Signal.CONFIRMED]
    assert [r.token for _, r in enroller.requests] == [
        "forged-token-000000000",
        "good-token-0123456789",
    ]
    assert load_config(target.out).station_id == "hn-cau-giay-07"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://swabline.example.org", True),
        ("https://SWABLINE.example.org/", True),
        ("https://swabline.example.org:443", True),
        ("https://swabline.example.org/province/hn", True),
        ("https://swabline.example.org.evil.org", False),
        ("https://evil.org/https://swabline.example.org", False),
        ("https://evil.org?swabline.example.org", False),
        ("http://swabline.example.org", False),
        ("https://swabline.example.org:8443", False),
        ("https://other.example.org", False),
    ],
)
def test_only_the_servers_the_image_names_are_allowed(url: str, allowed: bool) -> None:
    assert server_allowed(url, ["https://swabline.example.org"]) is allowed


def test_a_path_pin_allows_only_that_path() -> None:
    pins = ["https://gw.example.org/swabline/"]
    assert server_allowed("https://gw.example.org/swabline", pins)
    assert server_allowed("https://gw.example.org/swabline/hn", pins)
    assert not server_allowed("https://gw.example.org/swabline-evil", pins)
    assert not server_allowed("https://gw.example.org/", pins)


def test_a_forged_card_for_another_server_is_refused_and_its_token_goes_nowhere(
    target: Target, ca_pem: str, caplog: pytest.LogCaptureFixture
) -> None:
    servers = load_template_config(target).enrollment.servers
    assert servers == ["https://swabline.example.org"]  # the shipped template's pin
    forged = EnrollmentCard("https://swabline.example.org.evil.org", "good-token-0123456789")
    good = EnrollmentCard("https://swabline.example.org", "good-token-0123456789")
    feedback, enroller = RecordingFeedback(), FakeEnroller(ca_pem)
    answer = wait_for_card(
        sources=[FakeScanSource([forged.encode(), good.encode()])],
        feedback=feedback,
        stop=threading.Event(),
        attempt=lambda card: provision(
            server_url=card.server_url,
            token=card.token,
            target=target,
            enroller=enroller,
            servers=servers,
        ),
    )
    assert answer is not None
    assert feedback.signals == [Signal.REJECTED, Signal.CONFIRMED]
    assert [url for url, _ in enroller.requests] == ["https://swabline.example.org"]
    assert "is not a server this station may enroll with" in caplog.text


def test_a_template_without_a_workflow_is_refused_before_the_token_is_spent(
    tmp_path: Path, ca_pem: str
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    bare = tmp_path / "t.toml"
    bare.write_text(f'[scanner]\ntype = "stdin"\n[outbox]\npath = "{tmp_path / "outbox"}"\n')
    enroller = FakeEnroller(ca_pem)
    with pytest.raises(ConfigError, match="workflow: missing"):
        provision(
            server_url="https://s.example.org",
            token="good-token-0123456789",
            target=Target(out=etc / "station.toml", template=load_template(bare)),
            enroller=enroller,
        )
    assert enroller.requests == [] and listing(etc) == {}


def test_a_new_station_id_does_not_inherit_the_old_ones_numbering(
    target: Target, ca_pem: str, tmp_path: Path
) -> None:
    """This Pi was old-station-01: everything it sent was acknowledged (nothing waits), but its
    counter reached 500. As hn-cau-giay-07 (the server holds nothing: floor 0) it starts at 1."""
    target.out.write_text('station_id = "old-station-01"\n')
    outbox_path = tmp_path / "state" / "outbox"
    outbox_path.parent.mkdir()
    with TinyDbOutbox(outbox_path) as outbox:
        outbox.ensure_seq_floor(499)
        sent = record(500).model_copy(update={"station_id": "old-station-01"})
        outbox.append(sent)
        outbox.acknowledge([sent.record_id])
        assert len(outbox) == 0 and outbox.last_seq() == 500
    provision(
        server_url="https://s.example.org",
        token="good-token-0123456789",
        target=target,
        enroller=FakeEnroller(ca_pem, seq_floor=0),
    )
    with TinyDbOutbox(outbox_path) as outbox:
        assert outbox.last_seq() == 0
    assert outbox_path.with_name("outbox.old-station-01.previous").is_dir()


def test_the_same_station_provisioned_again_keeps_its_outbox(
    target: Target, ca_pem: str, tmp_path: Path
) -> None:
    target.out.write_text('station_id = "hn-cau-giay-07"\n')
    outbox_path = tmp_path / "state" / "outbox"
    outbox_path.parent.mkdir()
    with TinyDbOutbox(outbox_path) as outbox:
        outbox.ensure_seq_floor(0)
        outbox.append(record(1).model_copy(update={"station_id": "hn-cau-giay-07"}))
    provision(
        server_url="https://s.example.org",
        token="good-token-0123456789",
        target=target,
        enroller=FakeEnroller(ca_pem, seq_floor=0),
    )
    with TinyDbOutbox(outbox_path) as outbox:
        assert len(outbox) == 1 and outbox.last_seq() == 1  # still waiting to be delivered
    assert sorted(p.name for p in outbox_path.parent.iterdir()) == ["outbox"]


class RecordingServices:
    """systemd as the keyboard path sees it: which units exist, run, start and stop."""

    def __init__(self, *, installed: set[str], active: set[str], calls: list[str]) -> None:
        self._installed, self._active = installed, set(active)
        self.calls = calls

    def installed(self, unit: str) -> bool:
        return unit in self._installed

    def active(self, unit: str) -> bool:
        return unit in self._active

    def start(self, unit: str) -> None:
        self.calls.append(f"start {unit}")
        self._active.add(unit)

    def stop(self, unit: str) -> None:
        self.calls.append(f"stop {unit}")
        self._active.discard(unit)


UNITS = {"swabline-provision.service", "swabline-agent.service"}


@pytest.mark.parametrize("works", [True, False])
def test_the_keyboard_path_takes_over_from_the_waiting_service_and_hands_over(
    target: Target, ca_pem: str, works: bool
) -> None:
    steps: list[str] = []  # what happened, in order: systemctl calls and the rest
    services = RecordingServices(
        installed=UNITS, active={"swabline-provision.service"}, calls=steps
    )
    feedback = RecordingFeedback()

    def make_feedback() -> RecordingFeedback:
        steps.append("LEDs taken")
        return feedback

    def enroll() -> EnrollResponse:
        steps.append("enroll")
        return provision(
            server_url="https://s.example.org",
            token="good-token-0123456789" if works else "forged-token-000000000",
            target=target,
            enroller=FakeEnroller(ca_pem),
        )

    said: list[str] = []
    code = enroll_by_hand(
        enroll=enroll,
        make_feedback=make_feedback,
        services=services,
        out=target.out,
        say=said.append,
        linger=lambda: steps.append("pattern played"),
    )
    # The waiting service lets go of the scanner and LEDs before this command takes them.
    assert steps[:3] == ["stop swabline-provision.service", "LEDs taken", "enroll"]
    assert feedback.closed
    if works:
        assert code == 0 and feedback.signals == [Signal.CONFIRMED]
        assert steps[3:] == ["pattern played", "start swabline-agent.service"]
        assert "enrolled as station hn-cau-giay-07" in said[1]
    else:
        assert code == 1 and feedback.signals == [Signal.REJECTED]
        # Back to waiting for a card.
        assert steps[3:] == ["pattern played", "start swabline-provision.service"]
        assert "unknown enrollment token" in "\n".join(said)


def test_without_systemd_the_keyboard_path_says_how_to_start_the_agent(
    target: Target, ca_pem: str
) -> None:
    said: list[str] = []
    services = RecordingServices(installed=set(), active=set(), calls=[])
    code = enroll_by_hand(
        enroll=lambda: provision(
            server_url="https://s.example.org",
            token="good-token-0123456789",
            target=target,
            enroller=FakeEnroller(ca_pem),
        ),
        make_feedback=RecordingFeedback,
        services=services,
        out=target.out,
        say=said.append,
        linger=lambda: None,
    )
    assert code == 0 and services.calls == []
    assert f"start the agent yourself with 'swabline agent --config {target.out}'" in said[-1]
