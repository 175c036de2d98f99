"""The one C extension: the stop rule's window test (processors/_window.c).

Everything else about the package is in pyproject.toml; setuptools reads both.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("processors._window", ["processors/_window.c"])])
