"""The family's way in (DESIGN §11, docs/family.md): invitations (one-time sign-in links),
one-time sign-in codes, and the identifiers a family member signs in with.

Health and personal data rule (DESIGN §9, models/sealed.py): nothing here is a name, a phone
number, an e-mail address or a national id in plaintext. Secrets (the link's token, the code)
are stored as hashes only; identifiers (the contact a code goes to, the eID's identifier) as
keyed hashes (HMAC with the read model's index key: a stolen database alone cannot be searched
for a phone number, nor a 6-digit code guessed from its hash).

- `family_invitations`: one row per invitation the coordinator sent; the token in the link is
  256 random bits, stored as SHA-256 (like the staff's set-password links); single use, 72 h.
- `family_sign_in_codes`: a 6-digit code sent to the contact on file; its keyed hash, 10
  minutes, 5 tries.
- `family_identities`: `kind` "email" | "sms" (the contact an invitation went to: who may ask
  for a code) or "eid" (the broker's verified identifier, linked at the first eID sign-in from
  an invitation link or from a family session) -> (case, member).
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime

from sqlalchemy import Index, UniqueConstraint, update
from sqlmodel import Field, Session, SQLModel

from models import sealed


class FamilyInvitationRow(SQLModel, table=True):
    __tablename__ = "family_invitations"

    id: str = Field(primary_key=True)
    case_id: str = Field(index=True)
    member_id: str
    channel: str  # "sms" | "email"
    secret_hash: str = Field(unique=True)  # SHA-256 of the link's token
    created_at: datetime
    created_by: str  # the staff id who invited
    expires_at: datetime
    used_at: datetime | None = None
    cancelled_at: datetime | None = None
    message_key: str = ""  # the outbox row (notifications.key) that carries the link


class FamilySignInCodeRow(SQLModel, table=True):
    __tablename__ = "family_sign_in_codes"

    id: str = Field(primary_key=True)
    contact_hash: str = Field(index=True)  # keyed hash of the contact it was sent to
    code_hash: str  # keyed hash of "<id>:<code>"
    case_id: str
    member_id: str
    channel: str
    created_at: datetime
    expires_at: datetime
    attempts: int = 0
    # Used, superseded by a newer code, or out of tries: it signs nobody in any more.
    spent_at: datetime | None = None
    message_key: str = ""


class FamilyIdentityRow(SQLModel, table=True):
    __tablename__ = "family_identities"
    __table_args__ = (
        UniqueConstraint("kind", "identifier_hash", "case_id", "member_id", name="uq_family_identity"),
        Index("ix_family_identities_lookup", "kind", "identifier_hash"),
    )

    id: int | None = Field(default=None, primary_key=True)
    kind: str  # "email" | "sms" | "eid"
    identifier_hash: str  # keyed hash (models/sealed.py `keyed_hashes`)
    case_id: str = Field(index=True)
    member_id: str
    created_at: datetime
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


def withdraw_invitations(session: Session, case_id: str, member_id: str | None, now: datetime) -> int:
    """Withdraw a case's pending invitations (of one member, or all of its members) and spend
    their unused sign-in codes, e.g. when the family's consent no longer allows contact. The
    caller commits. Returns how many invitations were withdrawn."""
    links = update(FamilyInvitationRow).where(
        FamilyInvitationRow.case_id == case_id, FamilyInvitationRow.used_at.is_(None),
        FamilyInvitationRow.cancelled_at.is_(None))
    codes = update(FamilySignInCodeRow).where(FamilySignInCodeRow.case_id == case_id,
                                              FamilySignInCodeRow.spent_at.is_(None))
    if member_id is not None:
        links = links.where(FamilyInvitationRow.member_id == member_id)
        codes = codes.where(FamilySignInCodeRow.member_id == member_id)
    count = session.execute(links.values(cancelled_at=now)).rowcount
    session.execute(codes.values(spent_at=now))
    return count


# ---------------------------------------------------------------- identifiers (pure but for keys)

CONTACT_DOMAIN = b"family-contact"
EID_DOMAIN = b"family-eid"
CODE_DOMAIN = b"family-code"
_PHONE_JUNK = re.compile(r"[\s\-().\/]")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
COUNTRY_CODES = {"DK": "45", "SE": "46"}


def normalise_phone(value: str, country: str = "DK") -> str | None:
    """'+45 21 11 11 11', '0045 21111111', '21111111' (DK) -> '+4521111111'; SE '070-123 45 67'
    -> '+46701234567'. None when it is no phone number."""
    text = _PHONE_JUNK.sub("", unicodedata.normalize("NFKC", value or ""))
    if text.startswith("00"):
        text = "+" + text[2:]
    if text.startswith("+"):
        digits = text[1:]
    else:
        digits = text
        code = COUNTRY_CODES.get(country.upper(), "")
        if country.upper() == "SE" and digits.startswith("0"):
            digits = code + digits[1:]
        elif country.upper() == "DK" and len(digits) == 8:
            digits = code + digits
    if not digits.isdigit() or not 6 <= len(digits) <= 15:
        return None
    return "+" + digits


def normalise_email(value: str) -> str | None:
    text = unicodedata.normalize("NFKC", value or "").strip().casefold()
    if len(text) > 254 or not _EMAIL.match(text):
        return None
    return text


def normalise_contact(value: str, country: str = "DK") -> tuple[str, str] | None:
    """What a family member typed on the sign-in page -> (channel, normalised contact)."""
    if "@" in (value or ""):
        email = normalise_email(value)
        return ("email", email) if email else None
    phone = normalise_phone(value, country)
    return ("sms", phone) if phone else None


def contact_hashes(channel: str, normalised: str) -> list[str]:
    """Keyed hashes of a contact (current key first)."""
    return sealed.keyed_hashes(CONTACT_DOMAIN, f"{channel}:{normalised}")


def eid_hashes(issuer: str, identifier: str) -> list[str]:
    """Keyed hashes of a verified eID identifier, bound to the broker that vouched for it."""
    return sealed.keyed_hashes(EID_DOMAIN, f"{issuer.rstrip('/')}\0{identifier}")


def code_hash(code_id: str, code: str) -> str:
    return sealed.keyed_hashes(CODE_DOMAIN, f"{code_id}:{code}")[0]


def code_hashes(code_id: str, code: str) -> list[str]:
    return sealed.keyed_hashes(CODE_DOMAIN, f"{code_id}:{code}")
