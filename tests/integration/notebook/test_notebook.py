"""The orchestrator notebook runs top to bottom against the embedded fleet."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from endpoints.config import FleetConfig

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
NOTEBOOK = REPO / "notebooks" / "orchestrator.ipynb"


def test_notebook_is_stored_without_outputs() -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], "strip the outputs before committing the notebook"
            assert cell.execution_count is None


def test_notebook_executes_without_errors(embedded_fleet: FleetConfig) -> None:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(REPO)}},
    )
    client.execute()  # raises CellExecutionError naming the failing cell
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert len(images) == 3  # plan DAG, timeline, comparison
    assert "task_5 completed" in text
    assert "measured speed-up" in text
