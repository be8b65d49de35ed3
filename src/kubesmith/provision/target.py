"""What a provisioning run works on: an inventory, a state directory and artifact settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kubesmith import versions
from kubesmith.errors import UserError
from kubesmith.provision.inventory import Inventory, load_inventory
from kubesmith.spec import ArtifactSource, ClusterSpec
from kubesmith.stackfile import load_spec
from kubesmith.state.paths import stack_dir, state_dir

#: The file a stack's inventory is written to (by `kubesmith up` / the Pulumi resource).
STACK_INVENTORY = "inventory.yml"


@dataclass(frozen=True)
class ArtifactSettings:
    """Install source per component, and the mirror release downloads come from."""

    sources: Mapping[str, ArtifactSource]
    mirror_base_url: str | None = None

    @classmethod
    def uniform(
        cls, source: ArtifactSource, mirror_base_url: str | None = None
    ) -> ArtifactSettings:
        return cls(dict.fromkeys(versions.components(), source), mirror_base_url)

    def source(self, component: str) -> ArtifactSource:
        return self.sources[component]


@dataclass(frozen=True)
class Target:
    """One cluster's nodes and where its controller-side state (PKI, run data) lives."""

    label: str
    inventory: Inventory
    state_dir: Path
    artifacts: ArtifactSettings

    @property
    def pki_dir(self) -> Path:
        return self.state_dir / "pki"

    @property
    def runner_dir(self) -> Path:
        return self.state_dir / "ansible"

    @property
    def cache_dir(self) -> Path:
        return artifact_cache_dir()


def artifact_cache_dir() -> Path:
    """Release downloads, shared by every stack and lab (they are verified by checksum)."""
    return state_dir() / "cache" / "artifacts"


def _settings(spec: ClusterSpec, mirror_base_url: str | None = None) -> ArtifactSettings:
    """Each component's source as the spec says (its override, artifacts.source, or the
    backend's default: distro for lxd, release otherwise)."""
    return ArtifactSettings(
        {name: spec.artifact_source(name) for name in versions.components()},
        mirror_base_url or spec.artifacts.mirror_base_url,
    )


def for_stack(stack: str, root: Path | None = None) -> Target:
    spec = load_spec(stack, root)
    directory = stack_dir(stack, root)
    path = directory / STACK_INVENTORY
    if not path.is_file():
        raise UserError(
            f"stack {stack}: no inventory at {path}; create the nodes first "
            f"(kubesmith up -s {stack})"
        )
    return Target(f"stack {stack}", load_inventory(path), directory, _settings(spec))


def for_inventory(
    path: Path, source: ArtifactSource | None = None, mirror_base_url: str | None = None
) -> Target:
    """An inventory file on its own; its PKI and run data live beside it.

    Without ``source`` the cluster the inventory carries decides, as for a stack.
    """
    inventory = load_inventory(path)
    if source is None:
        settings = _settings(inventory.cluster.spec, mirror_base_url)
    else:
        settings = ArtifactSettings.uniform(source, mirror_base_url)
    return Target(str(path), inventory, path.resolve().parent, settings)
