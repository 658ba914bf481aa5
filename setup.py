"""The package list, found rather than written by hand (everything else is in pyproject.toml):
a new sub-package of ``lt_bench`` or of ``plugins/`` cannot be left out of the wheel, as
``lt_bench.sweep`` once was. ``plugins/`` installs as ``lt_bench_plugins`` and ``configs/`` as
``lt_bench_configs``, so that installing lt-bench never puts generic top-level modules called
``plugins`` or ``configs`` into site-packages; pyproject's ``packages.find`` cannot rename."""

from setuptools import find_packages, setup


def renamed(folder: str, name: str) -> list[str]:
    return [name, *(f"{name}.{sub}" for sub in find_packages(where=folder))]


setup(packages=[*find_packages(include=["lt_bench", "lt_bench.*"]),
                *renamed("plugins", "lt_bench_plugins"), "lt_bench_configs"],
      package_dir={"lt_bench_plugins": "plugins", "lt_bench_configs": "configs"})
