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
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select
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


@dataclass(frozen=True)
class Limits:
    per_addr: int = 10
    per_addr_window_s: int = 60
    per_key: int = 10
    per_key_window_s: int = 3600


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
    remote_addr = f"{purpose}:{remote_addr}"[:64]
    by_addr = session.scalar(
        select(func.count())
        .select_from(LookupAttempt)
        .where(
            LookupAttempt.remote_addr == remote_addr,
            LookupAttempt.at > now - timedelta(seconds=limits.per_addr_window_s),
        )
    )
    by_key = session.scalar(
        select(func.count())
        .select_from(LookupAttempt)
        .where(
            LookupAttempt.key_hash == key_hash,
            LookupAttempt.at > now - timedelta(seconds=limits.per_key_window_s),
        )
    )
    session.add(LookupAttempt(at=now, remote_addr=remote_addr, key_hash=key_hash))
    return (by_addr or 0) >= limits.per_addr or (by_key or 0) >= limits.per_key


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
    """Find a person's samples by ID number + date of birth, or by the code on their slip."""
    now = now or datetime.now(UTC)
    id_number = re.sub(r"\s+", "", id_number).upper()[:32]
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
        matches = [(p, d) for p, d in rows]
    else:
        declared = select(Declaration.person_id).where(Declaration.document_number == id_number)
        rows = session.execute(
            select(Person, Declaration)
            .outerjoin(Declaration, Declaration.person_id == Person.id)
            .where(
                or_(
                    and_(Person.key_type.in_(("cccd", "document")), Person.key == id_number),
                    Person.id.in_(declared),
                )
            )
        ).all()
        wanted = dob.isoformat() if dob else ""
        matches = []
        for p, d in rows:
            dates = [p.birth_date or "", d.birth_date if d is not None else ""]
            # Constant-time comparisons, every candidate, every date.
            ok = [hmac.compare_digest(x.encode(), wanted.encode()) for x in dates]
            if any(ok):
                matches.append((p, d))
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
