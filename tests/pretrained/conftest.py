"""Fixtures for tests/pretrained (the builders live in builders.py)."""

import pytest

from builders import train_bpe_tokenizer_json


@pytest.fixture(scope="session")
def tokenizer_json() -> str:
  return train_bpe_tokenizer_json()
