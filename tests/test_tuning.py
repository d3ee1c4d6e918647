"""The allocator tuning is accepted on this (glibc) machine and is idempotent."""

import platform

import pytest

from sweeps.tuning import tune_allocator


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_tune_allocator_is_accepted_and_idempotent():
    assert tune_allocator() is True
    assert tune_allocator() is True
