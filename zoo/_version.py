"""zoo's version: the one place it is written (pyproject.toml reads it from here).

A module of its own, importing nothing, so that any module of zoo can import it without importing the
package ``zoo`` (whose ``__init__`` imports ``api``, which needs the version for ``zoo.save``).
"""

__version__ = "0.1.0"
