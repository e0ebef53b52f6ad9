"""Packaging: everything is in pyproject.toml except the package list, which pyproject.toml cannot state.

The presets live in the top-level models/ folder (the one source) and are installed as the package
gradscope.models (pyproject.toml's package-dir and package-data).  A package mapped to a folder outside
gradscope/ is invisible to [tool.setuptools.packages.find], and a hand-written list of packages would miss the
next subpackage; so the list is found here: every gradscope* package of the tree, plus gradscope.models.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["gradscope", "gradscope.*"]), "gradscope.models"])
