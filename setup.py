"""Package discovery for the design card's layout.

The source tree keeps agent/, server/ and checks/ at the top; installed they are
sub-packages of `hisguard`, so nothing with a generic name lands in site-packages.
"""

from pathlib import Path

from setuptools import setup

ROOTS = {"hisguard": "hisguard", "hisguard.agent": "agent", "hisguard.server": "server", "hisguard.checks": "checks"}


def _packages() -> list[str]:
    found = []
    for name, folder in ROOTS.items():
        for init in sorted(Path(folder).rglob("__init__.py")):
            rel = init.parent.relative_to(folder).parts
            found.append(".".join((name, *rel)))
    return found


setup(
    packages=_packages(),
    package_dir=ROOTS,
    package_data={"": ["*.ini", "*.mako", "*.html", "*.css", "*.js", "*.toml", "*.json", "*.ttf"]},
    include_package_data=True,
)
