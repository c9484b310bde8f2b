"""The purpose and field catalogue: data in ``schemas/``, loaded and cross-checked once.

``fields.v1.json`` defines every field once (what it means, whether it identifies a person,
whether it is special-category data, whether it is by nature a professional judgement).
``purposes.v1.json`` lists the purposes a packet may be shared for, the agency kinds and the
legal powers. ``working-days.v1.json`` says which days count for deadlines set in working days.
Loading checks the files against ``catalogue.schema.v1.json`` and then checks every
cross-reference, so a catalogue that names an unknown field or agency kind never reaches the
rules (fail closed, at start-up).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import MappingProxyType
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource

from exchange.errors import ExchangeError
from exchange.policy import vocabulary as v
from exchange.policy.deadlines import Span, WorkingCalendar

#: The repository's ``schemas/`` folder (the package is installed editable beside it).
DEFAULT_SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"

FIELDS_FILE = "fields.v1.json"
PURPOSES_FILE = "purposes.v1.json"
WORKING_DAYS_FILE = "working-days.v1.json"
CATALOGUE_SCHEMA_FILE = "catalogue.schema.v1.json"
MANIFEST_SCHEMA_FILE = "manifest.v1.json"


class CatalogueInvalid(ExchangeError):
    """The purpose or field catalogue is unreadable, breaks its schema, or refers to unknown things."""

    code = "policy.catalogue_invalid"
    status = 500
    title = "The sharing rules' catalogue is not usable"


@dataclass(frozen=True)
class FieldDefinition:
    """One field, defined once for every purpose that uses it."""

    name: str
    title: str
    meaning: str
    value_type: str
    identifying: bool
    special_category: bool
    #: ``judgement`` for a field that is by nature a professional judgement (see :data:`v.FIELD_NATURES`).
    nature: str = "fact_or_opinion"

    @property
    def is_judgement(self) -> bool:
        """By nature a professional judgement: it can only be labelled opinion, never a fact."""
        return self.nature == "judgement"

    @property
    def is_attachment(self) -> bool:
        """Documents and images travel as attachments: bytes sealed in the body, digest in the manifest."""
        return self.value_type in v.ATTACHMENT_VALUE_TYPES


@dataclass(frozen=True)
class UrgencyDeadlines:
    """How long the recipient has to acknowledge and to report action, a manager to approve, and the
    recipient to answer the sender's query about their action report (with another report)."""

    ack: Span
    action: Span
    approval: Span
    query: Span


@dataclass(frozen=True)
class Suggested:
    """The choices ``exchange template`` starts from for a purpose; the practitioner confirms each."""

    article6: str
    article9: str | None
    legal_power: tuple[str, ...]
    consent_status: str
    without_consent_reason: str | None
    transparency_status: str
    transparency_reason: str | None
    risk_level: str
    imminent: bool
    expected_benefit: str


@dataclass(frozen=True)
class Purpose:
    """A purpose a packet may be shared for, with the fields and agencies it allows."""

    code: str
    title: str
    description: str
    kinds: tuple[str, ...]
    senders: frozenset[str]
    recipients: frozenset[str]
    allowed_fields: tuple[str, ...]
    required_fields: tuple[str, ...]
    #: Allowed fields that can identify a person (derived from the field catalogue).
    identifying_fields: tuple[str, ...]
    #: Allowed fields that carry special-category data (derived from the field catalogue).
    special_category_fields: tuple[str, ...]
    #: Allowed fields that are by nature a professional judgement, always labelled opinion (derived too).
    judgement_fields: tuple[str, ...]
    default_urgency: str
    allowed_urgencies: tuple[str, ...]
    deadlines: Mapping[str, UrgencyDeadlines]
    anonymous: bool
    requires_request: bool
    requires_imminent_risk: bool
    suggested: Suggested

    def deadlines_for(self, urgency: str) -> UrgencyDeadlines | None:
        """The deadlines at ``urgency``, or None when the purpose does not allow that urgency."""
        return self.deadlines.get(urgency)


@dataclass(frozen=True)
class Catalogue:
    """Purposes, fields and the deployment vocabularies, plus the compiled manifest schemas."""

    fields: Mapping[str, FieldDefinition]
    purposes: Mapping[str, Purpose]
    #: Agency kind code -> plain-English title.
    agency_kinds: Mapping[str, str]
    #: Legal power code -> citation.
    legal_powers: Mapping[str, str]
    #: Roles that may be the source of a reported fact (people and professionals).
    reporter_roles: Mapping[str, str]
    #: Professional roles that may author an opinion (and may also report facts).
    professional_roles: Mapping[str, str]
    #: Which days count for deadlines set in working days.
    calendar: WorkingCalendar
    schemas_dir: Path
    manifest_validator: Draft202012Validator = field(repr=False, compare=False)
    packet_file_validator: Draft202012Validator = field(repr=False, compare=False)

    def purpose(self, code: str | None) -> Purpose | None:
        """The purpose with this code, or None (an unknown purpose is a violation, never a default)."""
        return self.purposes.get(code) if code is not None else None

    def field(self, name: str) -> FieldDefinition | None:
        return self.fields.get(name)

    @property
    def source_roles(self) -> Mapping[str, str]:
        """Every role a reported fact may come from."""
        return MappingProxyType({**self.reporter_roles, **self.professional_roles})


def load_catalogue(schemas_dir: Path | None = None) -> Catalogue:
    """Load, validate and cross-check the catalogue in ``schemas_dir`` (default: the repository's).

    Raises :class:`CatalogueInvalid` listing every problem in ``extras["errors"]``. Call it once
    at start-up and pass the result around: evaluation itself never reads a file.
    """
    folder = schemas_dir if schemas_dir is not None else DEFAULT_SCHEMAS_DIR
    fields_doc = _read_json(folder / FIELDS_FILE)
    purposes_doc = _read_json(folder / PURPOSES_FILE)
    working_days_doc = _read_json(folder / WORKING_DAYS_FILE)
    catalogue_schema = _read_json(folder / CATALOGUE_SCHEMA_FILE)
    manifest_schema = _read_json(folder / MANIFEST_SCHEMA_FILE)
    for name, schema in ((CATALOGUE_SCHEMA_FILE, catalogue_schema), (MANIFEST_SCHEMA_FILE, manifest_schema)):
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as error:
            raise CatalogueInvalid(f"{name} is not a valid JSON Schema.") from error
    # Each schema is registered under its own $id, so its internal "#/$defs/..." references resolve.
    catalogue_id = str(catalogue_schema.get("$id", CATALOGUE_SCHEMA_FILE))
    manifest_id = str(manifest_schema.get("$id", MANIFEST_SCHEMA_FILE))
    registry: Registry = Registry().with_resources(
        [
            (catalogue_id, Resource.from_contents(catalogue_schema)),
            (manifest_id, Resource.from_contents(manifest_schema)),
        ]
    )
    errors: list[str] = []
    for file_name, document, definition in (
        (FIELDS_FILE, fields_doc, "fields_file"),
        (PURPOSES_FILE, purposes_doc, "purposes_file"),
        (WORKING_DAYS_FILE, working_days_doc, "working_days_file"),
    ):
        checker = _validator({"$ref": f"{catalogue_id}#/$defs/{definition}"}, registry)
        for problem in checker.iter_errors(document):
            where = "/" + "/".join(str(p) for p in problem.absolute_path)
            errors.append(f"{file_name} at {where}: {problem.message}")
    if errors:
        raise CatalogueInvalid("The catalogue does not match its schema.", extras={"errors": sorted(errors)})
    builder = _Builder(fields_doc, purposes_doc, working_days_doc)
    catalogue = builder.build(
        folder,
        _validator(manifest_schema, registry),
        _validator(packet_file_schema(manifest_id), registry),
    )
    if builder.errors:
        raise CatalogueInvalid("The catalogue refers to things it does not define.", extras={"errors": builder.errors})
    return catalogue


def packet_file_schema(manifest_id: str) -> dict[str, str]:
    """The packet file's schema: a definition inside the manifest schema (they share every section)."""
    return {"$ref": f"{manifest_id}#/$defs/packet_file"}


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CatalogueInvalid(f"{path.name} cannot be read as JSON.") from error


def _validator(schema: Mapping[str, Any], registry: Registry) -> Draft202012Validator:
    return Draft202012Validator(schema, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _titles(entries: Sequence[Mapping[str, str]], key: str = "title") -> Mapping[str, str]:
    return MappingProxyType({entry["code"]: entry[key] for entry in entries})


class _Builder:
    """Turns the two validated documents into a :class:`Catalogue`, collecting every broken reference."""

    _SUGGESTION_VOCABULARIES: ClassVar[dict[str, v.Vocabulary]] = {
        "article6": v.ARTICLE6,
        "article9": v.ARTICLE9,
        "consent_status": v.CONSENT_STATUSES,
        "without_consent_reason": v.WITHOUT_CONSENT_REASONS,
        "transparency_status": v.TRANSPARENCY_STATUSES,
        "transparency_reason": v.TRANSPARENCY_REASONS,
        "risk_level": v.RISK_LEVELS,
        "expected_benefit": v.EXPECTED_BENEFITS,
    }

    def __init__(
        self, fields_doc: Mapping[str, Any], purposes_doc: Mapping[str, Any], working_days_doc: Mapping[str, Any]
    ) -> None:
        self.fields_doc = fields_doc
        self.purposes_doc = purposes_doc
        self.working_days_doc = working_days_doc
        self.errors: list[str] = []

    def build(
        self, folder: Path, manifest_validator: Draft202012Validator, packet_validator: Draft202012Validator
    ) -> Catalogue:
        fields = self._fields()
        agency_kinds = _titles(self.purposes_doc["agency_kinds"])
        legal_powers = _titles(self.purposes_doc["legal_powers"], "citation")
        reporter_roles = _titles(self.fields_doc["reporter_roles"])
        professional_roles = _titles(self.fields_doc["professional_roles"])
        for what, entries in (
            ("agency kind", self.purposes_doc["agency_kinds"]),
            ("legal power", self.purposes_doc["legal_powers"]),
            ("role", [*self.fields_doc["reporter_roles"], *self.fields_doc["professional_roles"]]),
        ):
            self._unique(what, [entry["code"] for entry in entries])
        purposes: dict[str, Purpose] = {}
        for raw in self.purposes_doc["purposes"]:
            if raw["code"] in purposes:
                self.errors.append(f"purpose {raw['code']} is defined twice")
            purposes[raw["code"]] = self._purpose(raw, fields, agency_kinds, legal_powers)
        return Catalogue(
            fields=fields,
            purposes=MappingProxyType(purposes),
            agency_kinds=agency_kinds,
            legal_powers=legal_powers,
            reporter_roles=reporter_roles,
            professional_roles=professional_roles,
            calendar=self._calendar(),
            schemas_dir=folder,
            manifest_validator=manifest_validator,
            packet_file_validator=packet_validator,
        )

    def _unique(self, what: str, codes: Sequence[str]) -> None:
        seen: set[str] = set()
        for code in codes:
            if code in seen:
                self.errors.append(f"{what} {code} is defined twice")
            seen.add(code)

    def _fields(self) -> Mapping[str, FieldDefinition]:
        raw_fields = self.fields_doc["fields"]
        self._unique("field", [raw["name"] for raw in raw_fields])
        return MappingProxyType(
            {
                raw["name"]: FieldDefinition(
                    name=raw["name"],
                    title=raw["title"],
                    meaning=raw["meaning"],
                    value_type=raw["value_type"],
                    identifying=raw["identifying"],
                    special_category=raw["special_category"],
                    nature=raw.get("nature", "fact_or_opinion"),
                )
                for raw in raw_fields
            }
        )

    def _calendar(self) -> WorkingCalendar:
        doc = self.working_days_doc
        fallback = WorkingCalendar.weekdays()
        try:
            time_zone = ZoneInfo(doc["time_zone"])
        except (ZoneInfoNotFoundError, ValueError):
            self.errors.append(f"{WORKING_DAYS_FILE} names time zone {doc['time_zone']}, which is not known here")
            return fallback
        covers_from, covers_until = date.fromisoformat(doc["covers_from"]), date.fromisoformat(doc["covers_until"])
        if covers_from > covers_until:
            self.errors.append(f"{WORKING_DAYS_FILE} covers from {covers_from} to {covers_until}: an empty range")
        holidays: dict[date, str] = {}
        for entry in doc["bank_holidays"]:
            day = date.fromisoformat(entry["date"])
            if day in holidays:
                self.errors.append(f"{WORKING_DAYS_FILE} lists {day} twice")
            if not covers_from <= day <= covers_until:
                self.errors.append(f"{WORKING_DAYS_FILE} lists {day}, outside the range it says it covers")
            if day.weekday() >= 5:
                self.errors.append(f"{WORKING_DAYS_FILE} lists {day}, a weekend day (give the substitute day)")
            holidays[day] = entry["title"]
        return WorkingCalendar(
            region=doc["region"],
            time_zone=time_zone,
            covers_from=covers_from,
            covers_until=covers_until,
            bank_holidays=MappingProxyType(holidays),
        )

    def _purpose(
        self,
        raw: Mapping[str, Any],
        fields: Mapping[str, FieldDefinition],
        agency_kinds: Mapping[str, str],
        legal_powers: Mapping[str, str],
    ) -> Purpose:
        code = raw["code"]
        allowed = tuple(raw["allowed_fields"])
        required = tuple(raw["required_fields"])
        for name in allowed:
            if name not in fields:
                self.errors.append(f"purpose {code} allows field {name}, which fields.v1.json does not define")
        for name in required:
            if name not in allowed:
                self.errors.append(f"purpose {code} requires field {name} but does not allow it")
        for side in ("senders", "recipients"):
            for kind in raw[side]:
                if kind not in agency_kinds:
                    self.errors.append(f"purpose {code} names unknown agency kind {kind} in {side}")
        for kind in raw["kinds"]:
            if kind not in v.KINDS:
                self.errors.append(f"purpose {code} names unknown packet kind {kind}")
        urgencies = tuple(raw["allowed_urgencies"])
        if raw["default_urgency"] not in urgencies:
            self.errors.append(f"purpose {code}: default urgency {raw['default_urgency']} is not allowed")
        if set(raw["deadlines"]) != set(urgencies):
            self.errors.append(f"purpose {code}: deadlines must be given for exactly the allowed urgencies")
        deadlines: dict[str, UrgencyDeadlines] = {}
        for urgency, spans in raw["deadlines"].items():
            try:
                deadlines[urgency] = UrgencyDeadlines(
                    ack=Span.parse(spans["ack"]),
                    action=Span.parse(spans["action"]),
                    approval=Span.parse(spans["approval"]),
                    query=Span.parse(spans["query"]),
                )
            except ValueError as error:
                self.errors.append(f"purpose {code}: deadline at {urgency}: {error}")
        known = [fields[name] for name in allowed if name in fields]
        if raw["anonymous"]:
            for definition in known:
                if definition.identifying:
                    self.errors.append(f"anonymous purpose {code} allows identifying field {definition.name}")
        return Purpose(
            code=code,
            title=raw["title"],
            description=raw["description"],
            kinds=tuple(raw["kinds"]),
            senders=frozenset(raw["senders"]),
            recipients=frozenset(raw["recipients"]),
            allowed_fields=allowed,
            required_fields=required,
            identifying_fields=tuple(d.name for d in known if d.identifying),
            special_category_fields=tuple(d.name for d in known if d.special_category),
            judgement_fields=tuple(d.name for d in known if d.is_judgement),
            default_urgency=raw["default_urgency"],
            allowed_urgencies=urgencies,
            deadlines=MappingProxyType(deadlines),
            anonymous=raw["anonymous"],
            requires_request=raw["requires_request"],
            requires_imminent_risk=raw["requires_imminent_risk"],
            suggested=self._suggested(code, raw["suggested"], legal_powers),
        )

    def _suggested(self, code: str, raw: Mapping[str, Any], legal_powers: Mapping[str, str]) -> Suggested:
        for key, vocabulary in self._SUGGESTION_VOCABULARIES.items():
            value = raw.get(key)
            if value is not None and value not in vocabulary:
                self.errors.append(f"purpose {code} suggests unknown {key} {value}")
        for power in raw["legal_power"]:
            if power not in legal_powers:
                self.errors.append(f"purpose {code} suggests unknown legal power {power}")
        if raw["consent_status"] in v.WITHOUT_CONSENT_STATUSES and "without_consent_reason" not in raw:
            self.errors.append(f"purpose {code} suggests sharing without consent but names no reason")
        return Suggested(
            article6=raw["article6"],
            article9=raw.get("article9"),
            legal_power=tuple(raw["legal_power"]),
            consent_status=raw["consent_status"],
            without_consent_reason=raw.get("without_consent_reason"),
            transparency_status=raw["transparency_status"],
            transparency_reason=raw.get("transparency_reason"),
            risk_level=raw["risk_level"],
            imminent=raw.get("imminent", False),
            expected_benefit=raw["expected_benefit"],
        )
