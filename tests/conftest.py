"""Shared fixtures."""
import pytest


@pytest.fixture(params=["sparse", "dense"], scope="module")
def topk_path(request) -> str:
    """Each test that takes it runs on both TopK training paths (``train.topk_path``)."""
    return request.param
