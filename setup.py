"""The C extensions of the processors: per-fix geometry (processors/_geometry.c) and
cleaning steps (processors/_cleaning.c).

Everything else about the package is in pyproject.toml; setuptools reads both.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "processors._geometry",
            ["processors/_geometry.c"],
            # No fused multiply-add: haversine_m must round exactly as the Python it replaced.
            extra_compile_args=["-ffp-contract=off"],
        ),
        Extension("processors._cleaning", ["processors/_cleaning.c"]),
    ]
)
