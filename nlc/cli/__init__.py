"""The ``nlc`` command line: one module per verb, assembled in :mod:`nlc.cli.app`.

No verb imports torch at module level: ``validate``, ``show``, ``graph``, ``schema``,
``ls`` and ``cp`` never load it at all, so they answer instantly.
"""
