"""debootstrap's progress in one line: its current stage, or how many packages that stage did.

debootstrap prints an ``I:`` line per package and stage (``Retrieving adduser 3.134``,
``Extracting apt...``, ``Unpacking ...``, ``Configuring ...``): hundreds of lines, with no
total announced before the downloads end. The full output goes to the build log; the user
sees ``retrieved 87 packages`` or ``resolving dependencies of base packages`` instead.
"""

from __future__ import annotations

import re

#: A per-package line: ``Retrieving PACKAGE VERSION`` or ``Unpacking PACKAGE...`` (a stage's
#: own line has more words: ``Unpacking required packages...``).
_PACKAGE_LINE = re.compile(
    r"^(?:(?P<download>Retrieving) \S+ \S+"
    r"|(?P<install>Extracting|Unpacking|Configuring) \S+\.\.\.)$"
)
_DONE = {
    "Retrieving": "retrieved",
    "Extracting": "extracted",
    "Unpacking": "unpacked",
    "Configuring": "configured",
}
_FINISHED = "Base system installed successfully."


def _packages(count: int) -> str:
    return f"{count} package{'' if count == 1 else 's'}"


class DebootstrapProgress:
    """Fed debootstrap's output line by line; ``status`` is the condensed state."""

    def __init__(self) -> None:
        self.status = "starting"
        self.counts = dict.fromkeys(_DONE.values(), 0)

    def feed(self, line: str) -> bool:
        """Take one output line; True when ``status`` changed."""
        if not line.startswith("I: "):
            return False
        message = line[3:].strip()
        if message.startswith("Validating "):
            # Every retrieved package is validated next: nothing new to say.
            return False
        match = _PACKAGE_LINE.match(message)
        if match:
            done = _DONE[match.group("download") or match.group("install")]
            self.counts[done] += 1
            status = f"{done} {_packages(self.counts[done])}"
        elif message == _FINISHED:
            status = f"base system installed, {_packages(self.counts['retrieved'])}"
        else:
            text = message.removesuffix("...")
            status = text[:1].lower() + text[1:]
        changed = status != self.status
        self.status = status
        return changed
