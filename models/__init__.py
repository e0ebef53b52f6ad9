"""The experiment files shipped with GradScope (one *.toml each: the lecture's demos and classic comparisons).

This folder is the one source of the presets.  pyproject.toml installs it as the package ``gradscope.models``
(package data: *.toml), so an installed GradScope finds them with importlib.resources (gradscope.presets);
this file makes it a regular package for that mapping.  There is no Python code here.
"""
