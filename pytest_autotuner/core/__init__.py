"""The pure core: spec, search space, search, scoring, session and verdict.

Synchronous and free of network, container and file I/O: a session is driven by an injected
``evaluate(params, deadline)`` and returns a frozen outcome. The edges (``runtimes``, ``bench``, ``report``,
``sim`` and the ``plugin``) import from here; nothing here imports from them.
"""
