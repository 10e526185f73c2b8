import pytest

from kura_harness import KuraServer, build_time_shift_library


@pytest.fixture(scope="session")
def kura(tmp_path_factory):
    """One server shared by every test that does not need a server of its own."""
    server = KuraServer(tmp_path_factory.mktemp("shared") / "data")
    yield server
    server.stop()


@pytest.fixture
def fresh_kura(tmp_path):
    """A server of the test's own, for tests that restart, kill or reconfigure it."""
    server = KuraServer(tmp_path / "data")
    yield server
    server.stop()


@pytest.fixture
def kms(kura):
    return kura.client("kms")


@pytest.fixture
def new_key(kms):
    """Creates a fresh customer managed key in account A and returns its metadata."""
    def make(**kwargs):
        return kms.create_key(**kwargs)["KeyMetadata"]
    return make


@pytest.fixture(scope="session")
def time_shift_library(tmp_path_factory):
    """The LD_PRELOAD clock shim (kura_harness.TIME_SHIFT_SHIM), built once."""
    library = build_time_shift_library(tmp_path_factory.mktemp("shim"))
    if library is None:
        pytest.skip("no C compiler to build the clock shim")
    return library
