"""The one compiled part: the in-memory rate-limit counters (src/fluxer_oauth/core/_window.c).

Optional: where it cannot be built (no C compiler), the install goes on and the server uses
the pure-Python counters of rate_window.py, which give the same answers, only slower.
Everything else about the package is in pyproject.toml."""

from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "fluxer_oauth.core._window", ["src/fluxer_oauth/core/_window.c"],
    # Floats must round one operation at a time, as Python's do (no fused multiply-add).
    extra_compile_args=["-O2", "-ffp-contract=off"],
    optional=True,
)])
