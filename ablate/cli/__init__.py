"""The top floor: the command table (app) and one module of thin commands per group (build, score, proxy,
pool, optimize), with what they share (shared: options, the study loader, printing). A command parses its
options, calls one library or workflow function and prints; the pipelines are one floor down (workflows/).

May import every package below; nothing imports it (but `ablate.__main__`).
"""

from ablate.core.lazy import lazy

__all__ = ["main"]
# `import ablate.cli.app` runs this first: nothing here may import a command module
__getattr__ = lazy(__name__, {"app": ["main"]})
