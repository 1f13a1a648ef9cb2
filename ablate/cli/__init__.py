"""The top floor: the command table (app) and one module of thin commands per group (build, score, proxy,
pool, optimize), with what they share (shared: options, the study loader, printing). A command parses its
options, calls one library or workflow function and prints; the pipelines are one floor down (workflows/).

May import every package below; nothing imports it (but `ablate.__main__`).
"""
