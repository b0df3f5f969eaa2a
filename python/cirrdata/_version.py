"""The package's version: meson.build's project version (meson refuses to configure when they differ), and
the version of the libcirrdata the package must load (checked at import, cirrdata/_abi.py)."""
__version__ = '0.1.0'
