"""Events name their service as source in one spelling: shared.services.event_source."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from shared.services import SERVICES, event_source

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_publishes_as_itself(service: str) -> None:
    assert importlib.import_module(f"services.{service}").SOURCE == event_source(service)


def test_no_module_types_a_source_by_hand() -> None:
    literal = re.compile(r"""["']boreas/[a-z]""")
    typed = [
        f"{path.relative_to(ROOT)}:{number}"
        for top in ("services", "shared")
        for path in sorted((ROOT / top).rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if literal.search(line)
    ]
    assert typed == []
