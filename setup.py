"""The compiled helper only; everything else is declared in pyproject.toml.

``optional=True``: where it cannot be built (no compiler, no Python headers,
not Linux), installation goes on without it and the UDP listener uses its
pure-Python loop (gateway/server/batchio.py says which one runs).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "gateway.server._batchio",
            sources=["gateway/server/_batchio.c"],
            extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"],
            optional=True,
        )
    ]
)
