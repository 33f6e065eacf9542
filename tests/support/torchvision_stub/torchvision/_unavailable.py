"""The one building block of the stub: a named callable that raises when called."""

from collections.abc import Callable
from typing import Any


class TorchvisionStubError(RuntimeError):
    """Raised when code calls into the torchvision stand-in (it has no implementation)."""


def unavailable(name: str) -> Callable[..., Any]:
    """A stand-in for ``torchvision.<name>`` that raises `TorchvisionStubError` when called."""

    def call(*args: Any, **kwargs: Any) -> Any:
        raise TorchvisionStubError(
            f"torchvision.{name} was called, but the tests import pytorch-grad-cam against a "
            "torchvision stand-in (tests/support/torchvision_stub): the code path under test "
            "must not use torchvision"
        )

    call.__name__ = call.__qualname__ = name.rsplit(".", 1)[-1]
    return call
