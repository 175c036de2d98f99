"""The one C extension: the per-fix geometry of the processors (processors/_geometry.c).

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
        )
    ]
)
