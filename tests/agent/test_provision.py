"""`swabline provision` on the station: files all or nothing, with tight permissions."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from agent.config import load_config
from agent.errors import ConfigError, ProvisionError
from agent.fakes import FakeScanSource, RecordingFeedback
from agent.outbox import TinyDbOutbox
from agent.ports import Signal
from agent.provision import (
    HttpEnroller,
    Target,
    load_template,
    provision,
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
        .replace("/var/lib/swabline/outbox.json", str(tmp_path / "state" / "outbox.json"))
    )
    return Target(out=etc / "station.toml", template=load_template(template))


@pytest.fixture
def ca_pem(tmp_path: Path) -> str:
    return make_ca(tmp_path / "ca").cert.read_text()


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
    outbox_path = tmp_path / "state" / "outbox.json"
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
    aside = outbox_path.with_name("outbox.json.old-station-01.undelivered")
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
