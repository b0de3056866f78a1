"""Test-only classes referenced from tests/configs (importable as ``tests.helpers``)."""

import lightning as L


class FakeTextDataModule(L.LightningDataModule):
    """A data module of another kind, to test that model/data pairing is checked."""

    kind = "text"
