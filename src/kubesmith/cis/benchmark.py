"""The benchmark's items as typed, validated data (``benchmark.yaml`` beside this module)."""

from __future__ import annotations

from functools import cache
from typing import Literal, Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kubesmith.resources import package_file

Role = Literal["control_plane", "worker"]
ROLES: tuple[Role, ...] = ("control_plane", "worker")


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileRule(_Data):
    """Mode and/or owner of one file (``path``) or of every file below ``under``."""

    path: str | None = None
    under: str | None = None
    glob: str = "*"
    #: The most permissive mode allowed, in octal ("600": no bit outside 0600).
    mode: str | None = None
    #: "user:group", or the list of those allowed.
    owner: str | tuple[str, ...] | None = None
    #: ``under`` only: no file at all passes (files that appear only on a running cluster).
    optional: bool = False
    #: ``under`` only: directories are judged too, not only files.
    with_directories: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if (self.path is None) == (self.under is None):
            raise ValueError("a file rule names exactly one of path and under")
        if self.mode is None and self.owner is None:
            raise ValueError("a file rule judges mode, owner or both")
        if self.mode is not None:
            int(self.mode, 8)
        return self

    @property
    def owners(self) -> tuple[str, ...]:
        return (self.owner,) if isinstance(self.owner, str) else self.owner or ()

    @property
    def max_mode(self) -> int | None:
        return None if self.mode is None else int(self.mode, 8)


Expectation = Literal[
    "equals", "not_equals", "includes", "excludes", "contains", "at_least", "within", "set"
]
EXPECTATIONS: tuple[Expectation, ...] = (
    "equals", "not_equals", "includes", "excludes", "contains", "at_least", "within", "set",
)  # fmt: skip


class SettingRule(_Data):
    """A component's setting: a flag of its unit, else a key of its configuration file."""

    component: str
    flag: str | None = None
    #: Dotted path in the configuration file the component's ``config_flag`` names.
    key: str | None = None
    equals: str | None = None
    not_equals: str | None = None
    #: An element of a comma-separated value.
    includes: str | None = None
    excludes: str | None = None
    #: A substring of the value.
    contains: str | None = None
    at_least: int | None = None
    #: Every comma-separated element is one of these.
    within: tuple[str, ...] | None = None
    #: True: present and not empty; false: absent.
    set: bool | None = None
    #: An absent setting passes (the component's default satisfies the item).
    unset_passes: bool = False

    @model_validator(mode="after")
    def _one_expectation(self) -> Self:
        if self.flag is None and self.key is None:
            raise ValueError("a setting rule names a flag, a key or both")
        given = [name for name in EXPECTATIONS if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"a setting rule has exactly one of {', '.join(EXPECTATIONS)}")
        return self

    @property
    def expectation(self) -> tuple[Expectation, str | int | bool | tuple[str, ...]]:
        for name in EXPECTATIONS:
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated to have one")


class EncryptionRule(_Data):
    """The first (writing) provider of every resource in an EncryptionConfiguration."""

    component: str
    flag: str
    within: tuple[str, ...]


class Check(_Data):
    file: FileRule | None = None
    setting: SettingRule | None = None
    encryption: EncryptionRule | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Self:
        if sum(x is not None for x in (self.file, self.setting, self.encryption)) != 1:
            raise ValueError("a check is exactly one of file, setting and encryption")
        return self


class Item(_Data):
    id: str
    title: str
    roles: tuple[Role, ...] = Field(min_length=1)
    #: Where kubesmith keeps what the benchmark asks about.
    maps: str
    checks: tuple[Check, ...] = ()
    exception: str | None = None
    not_applicable: str | None = None
    manual: str | None = None

    @model_validator(mode="after")
    def _judged_or_reasoned(self) -> Self:
        ways = [bool(self.checks), *(r is not None for r in self.reasons.values())]
        if sum(ways) != 1:
            raise ValueError(
                f"item {self.id}: exactly one of checks, exception, not_applicable and manual"
            )
        return self

    @property
    def reasons(self) -> dict[str, str | None]:
        return {
            "exception": self.exception,
            "not applicable": self.not_applicable,
            "manual": self.manual,
        }


class Component(_Data):
    unit: str
    #: The unit's flag that names the component's configuration file.
    config_flag: str | None = None


class RecordedIds(_Data):
    automated: tuple[str, ...]
    manual: tuple[str, ...]


class Benchmark(_Data):
    benchmark: str
    recorded_ids: RecordedIds
    components: dict[str, Component]
    items: tuple[Item, ...]

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        ids = [item.id for item in self.items]
        if len(ids) != len(set(ids)):
            raise ValueError("an item id appears twice")
        for item in self.items:
            for check in item.checks:
                rule = check.setting or check.encryption
                if rule is not None and rule.component not in self.components:
                    raise ValueError(f"item {item.id}: unknown component {rule.component!r}")
                setting = check.setting
                if (
                    setting is not None
                    and setting.key is not None
                    and self.components[setting.component].config_flag is None
                ):
                    raise ValueError(f"item {item.id}: {setting.component} has no config file")
        return self

    def for_role(self, role: Role) -> list[Item]:
        return [item for item in self.items if role in item.roles]


@cache
def load() -> Benchmark:
    """kubesmith's shipped benchmark data."""
    text = package_file("cis", "benchmark.yaml").read_text(encoding="utf-8")
    return Benchmark.model_validate(yaml.safe_load(text))
