import pytest

from kura_harness import KuraServer


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
