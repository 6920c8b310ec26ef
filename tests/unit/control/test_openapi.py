"""``/openapi.json`` names every operation once: clients generated from it (and the fuzz
run that reads it) tell each operation apart."""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path

from cattery.control.app import create_app
from tests.support.inprocess import settings_for


def test_every_operation_has_its_own_id(tmp_path: Path) -> None:
    app = create_app(settings_for(tmp_path / "state"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        schema = app.openapi()
    assert not [w for w in caught if "Operation ID" in str(w.message)]
    ids = Counter(
        operation["operationId"]
        for path_item in schema["paths"].values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "operationId" in operation
    )
    assert ids and all(count == 1 for count in ids.values()), [i for i, n in ids.items() if n > 1]
    proxy = schema["paths"]["/v1/public/{name}/sessions/{session_id}/{path}"]
    assert proxy["get"]["operationId"] != proxy["post"]["operationId"]
    assert proxy["get"]["operationId"].endswith("_get")
