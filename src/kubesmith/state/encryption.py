"""Secrets encrypted at rest: the cluster's EncryptionConfiguration, created once, kept.

The file holds the key itself, so it is generated on the controller with a random 32-byte
key the first time a cluster is provisioned, written 0600 beside the PKI and reused on every
later run (a new key would make every stored Secret unreadable). The control_plane role copies
it to the control planes (0600, no_log) and points kube-apiserver at it.

``secretbox`` (XSalsa20-Poly1305) is the default: the strongest of the providers that keep
the key locally. ``aescbc`` is the alternative the hard way uses. Both store values in etcd
prefixed ``k8s:enc:<provider>:v1:<key name>:``, which the smoke test looks for. Changing the
provider of an existing cluster is a key rotation and is refused here (see
docs/cluster.md#encryption-at-rest).
"""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any, Literal, cast

import yaml

from kubesmith.errors import KubesmithError, UserError
from kubesmith.state.files import atomic_write, check_private

Provider = Literal["secretbox", "aescbc"]
PROVIDERS: tuple[Provider, ...] = ("secretbox", "aescbc")
DEFAULT_PROVIDER: Provider = "secretbox"
CONFIG_FILE = "encryption-config.yaml"
#: Name of the first key; rotation would add key2 in front of it.
KEY_NAME = "key1"
#: Inventory variable choosing the provider of a new cluster.
PROVIDER_VAR = "kubesmith_encryption_provider"


def _config(provider: Provider, secret: str) -> dict[str, Any]:
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "EncryptionConfiguration",
        "resources": [
            {
                "resources": ["secrets"],
                "providers": [
                    {provider: {"keys": [{"name": KEY_NAME, "secret": secret}]}},
                    # Reads of Secrets written before encryption was on still work.
                    {"identity": {}},
                ],
            }
        ],
    }


def current_provider(path: Path) -> Provider:
    """The provider that encrypts new writes in the configuration at ``path``."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        first = data["resources"][0]["providers"][0]
        (name,) = first
    except (yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        raise KubesmithError(f"{path}: not an EncryptionConfiguration kubesmith wrote") from None
    if name not in PROVIDERS:
        raise KubesmithError(f"{path}: unknown encryption provider {name!r}")
    return cast(Provider, name)


def ensure_config(directory: Path, provider: str = DEFAULT_PROVIDER) -> tuple[Path, bool]:
    """The cluster's encryption configuration (created when missing) and whether it is new."""
    if provider not in PROVIDERS:
        raise UserError(
            f"{PROVIDER_VAR}: {provider!r} is not supported (choose {', '.join(PROVIDERS)})"
        )
    path = directory / CONFIG_FILE
    if path.exists():
        check_private(path, "the Secrets encryption key")
        existing = current_provider(path)
        if existing != provider:
            raise UserError(
                f"{PROVIDER_VAR}: the cluster encrypts Secrets with {existing}; switching to "
                f"{provider} is a key rotation kubesmith does not do on its own",
                hint="see docs/cluster.md#encryption-at-rest",
            )
        return path, False
    secret = base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    text = "# Managed by kubesmith: the Secrets encryption key. Never share, never lose.\n"
    text += yaml.safe_dump(_config(provider, secret), sort_keys=False)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"), 0o600)
    return path, True
