"""What the public sees without logging in: result lookup, slip verification, and the
self-declaration that gives people without the app a personal QR code.

The lookup must not tell whether an ID number exists: every request does the same work (one
keyed hash, one attempt row, the rate-limit counts, one person query, one results query, even
when nothing matched) and gets the same page shape; a wrong date of birth and an unknown ID get
the very same answer. Rate limits count attempts per address and per ID number asked for
(whether or not it exists).
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Row, and_, case, delete, func, or_, select
from sqlalchemy.orm import Session

from server.healthqr import (
    HealthQr,
    declaration_qr,
    new_lookup_code,
    new_qid,
    normalise_lookup_code,
)
from server.models import (
    Declaration,
    LookupAttempt,
    Organisation,
    Person,
    PoolMember,
    Result,
    Tube,
)
from server.signing import KeyedHash, SlipRef, SlipSigner

MAX_SAMPLES_SHOWN = 10


DAY_S = 86_400


@dataclass(frozen=True)
class Limits:
    per_addr: int = 10
    per_addr_window_s: int = 60
    per_key: int = 10
    per_key_window_s: int = 3600
    per_key_day: int | None = None
    """Attempts on one key (ID number, slip code) per 24 hours, from anywhere: the cap that
    keeps a date of birth from being guessed a few attempts an hour, day after day."""


def address_group(remote_addr: str) -> str:
    """The unit an address limit counts: the address itself, or for IPv6 its /64 (one
    subscriber's network, inside which addresses are free to change)."""
    try:
        ip = ipaddress.ip_address(remote_addr)
    except ValueError:
        return remote_addr
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def throttled(
    session: Session,
    *,
    remote_addr: str,
    key_hash: str,
    limits: Limits,
    now: datetime,
    purpose: str = "lookup",
) -> bool:
    """Record an attempt and tell whether the caller is over a limit (counted before this one).
    Attempts of different ``purpose`` (lookups, declarations) are counted apart."""
    remote_addr = f"{purpose}:{address_group(remote_addr)}"[:64]
    by_addr = session.scalar(
        select(func.count())
        .select_from(LookupAttempt)
        .where(
            LookupAttempt.remote_addr == remote_addr,
            LookupAttempt.at > now - timedelta(seconds=limits.per_addr_window_s),
        )
    )
    key_window = now - timedelta(seconds=limits.per_key_window_s)
    longest = max(limits.per_key_window_s, DAY_S if limits.per_key_day is not None else 0)
    by_key, by_key_day = session.execute(
        select(
            func.coalesce(func.sum(case((LookupAttempt.at > key_window, 1), else_=0)), 0),
            func.count(),
        )
        .select_from(LookupAttempt)
        .where(
            LookupAttempt.key_hash == key_hash,
            LookupAttempt.at > now - timedelta(seconds=longest),
        )
    ).one()
    session.add(LookupAttempt(at=now, remote_addr=remote_addr, key_hash=key_hash))
    over_day = limits.per_key_day is not None and int(by_key_day) >= limits.per_key_day
    return (by_addr or 0) >= limits.per_addr or int(by_key) >= limits.per_key or over_day


def prune_attempts(session: Session, *, older_than: datetime) -> int:
    """Forget attempts no limit looks at any more; returns how many were deleted."""
    result = session.execute(delete(LookupAttempt).where(LookupAttempt.at < older_than))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def parse_birth_date(text: str) -> date | None:
    text = text.strip()
    for pattern in (r"(\d{4})-(\d{2})-(\d{2})", r"(\d{2})/(\d{2})/(\d{4})"):
        m = re.fullmatch(pattern, text)
        if m:
            a, b, c = (int(x) for x in m.groups())
            try:
                return date(a, b, c) if len(m.group(1)) == 4 else date(c, b, a)
            except ValueError:
                return None
    return None


# --- lookup ---------------------------------------------------------------------------------


@dataclass
class SampleView:
    tube: str
    sampled_at: datetime | None
    test_kind: str | None
    pooled: bool
    value: str | None
    reported_at: datetime | None
    lab: str | None
    result_id: int | None
    slip_token: str | None

    @property
    def outcome(self) -> str:
        """An i18n key: what this sample means for the person."""
        if self.value is None:
            return "result.pending"
        if self.value == "positive" and self.pooled:
            return "result.pool_positive"
        return f"result.{self.value}"


@dataclass
class LookupAnswer:
    status: str
    """``found``, ``none`` (nothing for these details, whatever the reason), ``limited`` or
    ``incomplete`` (the form was not filled in)."""
    name: str | None = None
    birth_date: str | None = None
    person_key: str | None = None
    samples: list[SampleView] = field(default_factory=list)


def _birth_parts(text: str | None) -> tuple[str, str, str] | None:
    """``YYYY-MM-DD`` with ``**`` for a masked month or day (the health QR's form) -> its
    parts; None when there is no usable year."""
    m = re.fullmatch(r"(\d{4})-(\d{2}|\*\*)-(\d{2}|\*\*)", text or "")
    return (m.group(1), m.group(2), m.group(3)) if m else None


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _birth_agrees(stored: str | None, entered: date) -> tuple[bool, bool]:
    """(every known part of ``stored`` equals ``entered``, ``stored`` is a full date).
    Compared in constant time, every part, whatever the outcome."""
    parts = _birth_parts(stored)
    if parts is None:
        _same("0000", "0001")  # the same work as a comparison
        return False, False
    wanted = (f"{entered.year:04d}", f"{entered.month:02d}", f"{entered.day:02d}")
    same = [part == "**" or _same(part, want) for part, want in zip(parts, wanted, strict=True)]
    return all(same), "**" not in parts


def lookup(
    session: Session,
    *,
    keyed: KeyedHash,
    signer: SlipSigner,
    limits: Limits,
    remote_addr: str,
    id_number: str = "",
    birth_date: str = "",
    code: str = "",
    now: datetime | None = None,
) -> LookupAnswer:
    """Find a person's samples by an ID number + date of birth, or by the code on their slip.

    The ID number is matched against (see docs/lab-and-results.md, "The public lookup"):

    - a CCCD or other document the person was sampled with, or wrote on a self-declaration,
      or that a health QR carried unmasked (``persons.document_number``). The date of birth
      must equal a full date stored for that number; the person's other records under the same
      number (a health QR with the year only) come along when their known parts agree;
    - a QID (the person was sampled with a health QR): the known parts of the stored date
      (often the year only) must agree with the date given. The QID is as private as the QR
      code that carries it.
    """
    now = now or datetime.now(UTC)
    typed = re.sub(r"\s+", "", id_number)[:64]
    id_number = typed.upper()
    code_norm = normalise_lookup_code(code)[:32]
    dob = parse_birth_date(birth_date)
    by_code = bool(code_norm) and not id_number
    if not by_code and (not id_number or dob is None):
        return LookupAnswer("incomplete")
    key_hash = keyed("code", code_norm) if by_code else keyed("id", id_number)
    if throttled(session, remote_addr=remote_addr, key_hash=key_hash, limits=limits, now=now):
        session.commit()
        return LookupAnswer("limited")
    session.commit()
    if by_code:
        rows = session.execute(
            select(Person, Declaration)
            .join(Declaration, Declaration.person_id == Person.id)
            .where(Declaration.lookup_code_hash == keyed("lookup-code", code_norm))
        ).all()
        matches: list[tuple[Person, Declaration | None]] = [(p, d) for p, d in rows]
    else:
        assert dob is not None
        qids = sorted({typed, id_number})
        declared = select(Declaration.person_id).where(Declaration.document_number == id_number)
        rows = session.execute(
            select(Person, Declaration)
            .outerjoin(Declaration, Declaration.person_id == Person.id)
            .where(
                or_(
                    and_(Person.key_type.in_(("cccd", "document")), Person.key == id_number),
                    Person.document_number == id_number,
                    and_(Person.key_type == "qid", Person.key.in_(qids)),
                    Person.id.in_(declared),
                )
            )
            .order_by(Person.id)
        ).all()
        matches = _authenticated(rows, id_number, qids, dob)
    person_ids = [p.id for p, _ in matches] or [-1]
    samples = _samples(session, signer, person_ids)
    if not matches:
        return LookupAnswer("none")
    person, declaration = matches[0]
    name = declaration.name if declaration is not None else person.name
    birth = declaration.birth_date if declaration is not None else person.birth_date
    return LookupAnswer(
        "found", name=name, birth_date=birth, person_key=person.key, samples=samples
    )


def _authenticated(
    rows: Sequence[Row[Person, Declaration]],
    id_number: str,
    qids: list[str],
    dob: date,
) -> list[tuple[Person, Declaration | None]]:
    """The candidate rows the date of birth lets through (every comparison made for every
    candidate, so that the time spent does not depend on which one matched)."""
    by_document: list[tuple[Person, Declaration | None, bool]] = []
    by_qid: list[tuple[Person, Declaration | None, bool]] = []
    exact = False
    for row in rows:
        p, d = row[0], row[1]
        checks = [_birth_agrees(p.birth_date, dob)]
        checks.append(_birth_agrees(d.birth_date if d is not None else None, dob))
        agrees = any(ok for ok, _ in checks)
        full = any(ok and whole for ok, whole in checks)
        if p.key_type == "qid" and p.key in qids:
            by_qid.append((p, d, agrees))
        if (
            (p.key_type != "qid" and p.key == id_number)
            or p.document_number == id_number
            or (d is not None and d.document_number == id_number)
        ):
            by_document.append((p, d, agrees))
            exact = exact or full
    # A document number with a year of birth is not enough (a CCCD number carries the year):
    # one full date stored for the number must match before anything under it is shown.
    chosen = [(p, d) for p, d, ok in by_qid if ok]
    chosen += [(p, d) for p, d, ok in by_document if ok and exact]
    unique: dict[int, tuple[Person, Declaration | None]] = {}
    for person, declaration in chosen:
        unique.setdefault(person.id, (person, declaration))
    return list(unique.values())


def _samples(session: Session, signer: SlipSigner, person_ids: list[int]) -> list[SampleView]:
    lab = select(Organisation.name).where(Organisation.id == Tube.lab_id).scalar_subquery()
    rows = session.execute(
        select(Tube, Result, lab, PoolMember.person_id)
        .join(PoolMember, PoolMember.tube_id == Tube.id)
        .outerjoin(Result, and_(Result.tube_id == Tube.id, Result.superseded_at.is_(None)))
        .where(PoolMember.person_id.in_(person_ids), PoolMember.undone_at.is_(None))
        .order_by(func.coalesce(Tube.closed_at, Tube.opened_at, Tube.created_at).desc())
        .limit(MAX_SAMPLES_SHOWN)
    ).all()
    out = []
    for tube, result, lab_name, pid in rows:
        out.append(
            SampleView(
                tube=tube.code,
                sampled_at=tube.closed_at or tube.opened_at,
                test_kind=tube.test_kind,
                pooled=tube.mode == "pool",
                value=result.value if result is not None else None,
                reported_at=result.reported_at if result is not None else None,
                lab=lab_name,
                result_id=result.id if result is not None else None,
                slip_token=signer.sign(SlipRef(result.id, pid)) if result is not None else None,
            )
        )
    return out


# --- slips and their verification --------------------------------------------------------------


def mask_name(name: str | None) -> str:
    """``Nguyễn Thị Bình`` -> ``N***** T** B***``: enough to match a paper, not to learn it."""
    if not name:
        return ""
    return " ".join(w[0] + "*" * (len(w) - 1) for w in name.split())


def mask_key(key: str) -> str:
    return "*" * max(len(key) - 4, 0) + key[-4:]


@dataclass
class Slip:
    """A result slip: one result of one person (current or since corrected)."""

    token: str
    person: Person
    name: str | None
    birth_date: str | None
    tube: Tube
    result: Result
    current: Result | None
    lab: str | None

    @property
    def outcome(self) -> str:
        if self.result.value == "positive" and self.tube.mode == "pool":
            return "result.pool_positive"
        return f"result.{self.result.value}"

    @property
    def corrected(self) -> bool:
        return self.current is not None and self.current.id != self.result.id


def load_slip(session: Session, signer: SlipSigner, token: str) -> Slip | None:
    """The slip a token names, or None if the token is forged or names nothing."""
    ref = signer.verify(token)
    if ref is None:
        return None
    row = session.execute(
        select(Result, Tube, Person)
        .join(Tube, Tube.id == Result.tube_id)
        .join(PoolMember, PoolMember.tube_id == Tube.id)
        .join(Person, Person.id == PoolMember.person_id)
        .where(Result.id == ref.result_id, Person.id == ref.person_id)
    ).first()
    if row is None:
        return None
    result, tube, person = row
    current = session.scalars(
        select(Result).where(Result.tube_id == tube.id, Result.superseded_at.is_(None))
    ).first()
    declaration = session.scalars(
        select(Declaration).where(Declaration.person_id == person.id)
    ).first()
    lab = session.get(Organisation, tube.lab_id) if tube.lab_id else None
    return Slip(
        token=token,
        person=person,
        name=declaration.name if declaration else person.name,
        birth_date=declaration.birth_date if declaration else person.birth_date,
        tube=tube,
        result=result,
        current=current,
        lab=lab.name if lab else None,
    )


# --- self-declaration --------------------------------------------------------------------------


@dataclass
class DeclarationForm:
    name: str = ""
    birth_date: str = ""
    sex: str = ""
    document: str = ""
    phone: str = ""
    address: str = ""
    on_behalf: bool = False

    def validate(self, today: date) -> tuple[date | None, dict[str, str]]:
        """The parsed birth date and the errors (field -> i18n key)."""
        errors: dict[str, str] = {}
        self.name = re.sub(r"\s+", " ", self.name).strip()
        self.document = re.sub(r"\s+", "", self.document).upper()
        self.phone = re.sub(r"[\s.\-]", "", self.phone)
        self.address = self.address.strip()
        if not self.name or not any(c.isalpha() for c in self.name):
            errors["name"] = "declare.err.name"
        elif len(self.name) > 200:
            errors["name"] = "declare.err.too_long"
        dob = parse_birth_date(self.birth_date)
        if dob is None or dob > today or dob.year < 1900:
            errors["birth_date"] = "declare.err.birth_date"
        if self.sex not in ("", "male", "female"):
            self.sex = ""
        if self.document and not re.fullmatch(r"[A-Z0-9]{1,20}", self.document):
            errors["document"] = "declare.err.document"
        if self.phone and not re.fullmatch(r"\+?\d{9,15}", self.phone):
            errors["phone"] = "declare.err.phone"
        if len(self.address) > 300:
            errors["address"] = "declare.err.too_long"
        return (dob if "birth_date" not in errors else None), errors


@dataclass
class Declared:
    declaration: Declaration
    qr: HealthQr
    lookup_code: str


def declare(
    session: Session, *, keyed: KeyedHash, form: DeclarationForm, dob: date, locale: str
) -> Declared:
    """Issue a QID and a lookup code, create the person (key type ``qid``) and the
    declaration, in ``session``'s transaction."""
    now = datetime.now(UTC)
    while True:
        qid = new_qid()
        taken = session.scalar(select(func.count()).select_from(Person).where(Person.key == qid))
        if not taken:
            break
    code = new_lookup_code()
    person = Person(
        key_type="qid",
        key=qid,
        name=form.name,
        name_reliable=True,
        birth_date=dob.isoformat(),
        sex=form.sex or None,
        address=form.address or None,
        document_number=form.document or None,
        first_seen_at=now,
        last_seen_at=now,
    )
    session.add(person)
    session.flush()
    declaration = Declaration(
        qid=qid,
        lookup_code_hash=keyed("lookup-code", code),
        person_id=person.id,
        name=form.name,
        birth_date=dob.isoformat(),
        sex=form.sex or None,
        document_number=form.document or None,
        phone=form.phone or None,
        address=form.address or None,
        on_behalf=form.on_behalf,
        locale=locale,
        created_at=now,
    )
    session.add(declaration)
    session.flush()
    qr = declaration_qr(
        name=form.name, birth_date=dob, document=form.document, qid=qid, on_behalf=form.on_behalf
    )
    return Declared(declaration, qr, code)
