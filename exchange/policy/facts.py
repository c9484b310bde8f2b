"""The shape of a rule: a stable id, a sentence, its source, and a pure check over :class:`Facts`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from exchange.policy.catalogue import Catalogue, FieldDefinition, Purpose
from exchange.policy.context import SharingContext
from exchange.policy.model import FieldEntry, SharingRecord


@dataclass(frozen=True)
class Finding:
    """One place where a rule is broken (or, ``advisory``, could not be judged in a local check)."""

    path: str
    message: str
    advisory: bool = False


@dataclass(frozen=True)
class Facts:
    """Everything a rule may look at. Rules read it; nothing in it can be changed or looked up."""

    record: SharingRecord
    purpose: Purpose | None
    catalogue: Catalogue
    context: SharingContext

    def definition(self, entry: FieldEntry) -> FieldDefinition | None:
        return self.catalogue.field(entry.name)

    def entries_where(self, test: Callable[[FieldDefinition], bool]) -> tuple[FieldEntry, ...]:
        """Shared fields whose catalogue definition passes ``test`` (unknown fields never do)."""
        out = []
        for entry in self.record.fields:
            definition = self.definition(entry)
            if definition is not None and test(definition):
                out.append(entry)
        return tuple(out)

    @property
    def identifying_entries(self) -> tuple[FieldEntry, ...]:
        return self.entries_where(lambda d: d.identifying)

    @property
    def identifies_someone(self) -> bool:
        """An identifying field or a subject reference is present."""
        return bool(self.identifying_entries) or self.record.subject_path is not None

    @property
    def is_consultation(self) -> bool:
        """An anonymous consultation, by purpose or by kind."""
        return self.record.kind == "consultation" or (self.purpose is not None and self.purpose.anonymous)

    @property
    def imminent_harm(self) -> bool:
        """The sender records imminent risk and shares immediately: the packet may go before approval."""
        return self.record.proportionality.imminent is True and self.record.urgency == "immediate"


Check = Callable[[Facts], Iterable[Finding]]


@dataclass(frozen=True)
class RuleText:
    """What a rule says: ``id`` is stable (rejections cite it), ``sentence`` says what it requires."""

    id: str
    sentence: str
    source: str


@dataclass(frozen=True)
class Rule(RuleText):
    """A sharing rule the policy checks itself, with a pure ``check`` over :class:`Facts`."""

    check: Check = field(repr=False, compare=False)
