"""Test setup: 8 fake CPU devices, set before jax is imported anywhere."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import tempfile  # noqa: E402

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")
# Tests build the same small models and steps many times (every trainer run jits its own functions): a compilation
# cache of this test run (per pytest-xdist worker) compiles each program once.
_CACHE = os.path.join(tempfile.gettempdir(), "mlst_jax_test_cache",
                      os.environ.get("PYTEST_XDIST_TESTRUNUID", str(os.getpid())),
                      os.environ.get("PYTEST_XDIST_WORKER", "main"))
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_collection_modifyitems(config, items):
    """The demo's module first: its fixture runs the whole demo in a subprocess on every core for minutes, and
    pytest-xdist would otherwise start it beside the miniature's (its neighbour in tests/jobs/), slowing both."""
    items.sort(key=lambda item: not item.nodeid.startswith("tests/jobs/test_demo.py"))
