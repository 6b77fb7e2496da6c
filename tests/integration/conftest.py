"""Fixtures for the posthorn integration tests.

`daemons` (per test) and `mod_daemons` (per module) hand out Daemon objects
that are always stopped and removed at the end, even when the test fails.
`smtpd` is a module-wide running daemon with the usual accounts."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import helpers  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def binaries():
    missing = [p for p in (helpers.posthornd_path(), helpers.setup_path())
               if not os.access(p, os.X_OK)]
    if missing:
        pytest.fail("posthorn binaries missing (build first or set POSTHORN_BUILD): %s"
                    % ", ".join(missing), pytrace=False)
    return helpers.build_dir()


class DaemonPool:
    def __init__(self):
        self.daemons = []

    def make(self, settings=None, start=True, provision=True, name="d", env=None):
        d = helpers.Daemon(settings, name=name)
        self.daemons.append(d)
        if start:
            d.start(env=env)
            if provision:
                helpers.provision(d)
        return d

    def cleanup(self):
        for d in self.daemons:
            rc, tail = d.cleanup()
            # Shown by pytest only when something failed.
            print("--- posthornd %s (port %d) stopped with %s; stderr tail:\n%s"
                  % (d.base, d.port, rc, tail))


@pytest.fixture
def daemons():
    pool = DaemonPool()
    yield pool
    pool.cleanup()


@pytest.fixture(scope="module")
def mod_daemons():
    pool = DaemonPool()
    yield pool
    pool.cleanup()


@pytest.fixture(scope="module")
def smtpd(mod_daemons):
    return mod_daemons.make(name="smtpd")


@pytest.fixture
def new_user(smtpd):
    """A fresh account on the module daemon, created while it runs."""
    addr = helpers.unique("u") + "@example.test"
    rc, out, err = smtpd.setup("email", "add", addr, "secret-password-2")
    assert rc == 0, (rc, out, err)
    return addr
