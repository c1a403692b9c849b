"""Maps the two source roots (operator/, worker/) onto the one `splitserve` namespace package."""

from pathlib import Path

from setuptools import find_namespace_packages, setup

ROOTS = ("operator", "worker")
package_dir: dict[str, str] = {}
for root in ROOTS:
    for name in find_namespace_packages(root, include=["splitserve", "splitserve.*"]):
        path = Path(root, *name.split("."))
        if name not in package_dir or any(path.glob("*.py")):
            package_dir[name] = path.as_posix()

setup(packages=sorted(package_dir), package_dir=package_dir)
