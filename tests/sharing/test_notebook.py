"""docs/notebooks/similarity_analysis.ipynb runs headless on the tiny preset and shows both figures."""
import os
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "docs" / "notebooks" / "similarity_analysis.ipynb"


def test_similarity_notebook(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, not the tests' eight
    env.update(MLST_NB_PRESET="tiny", MLST_NB_WORKDIR=str(tmp_path), JAX_PLATFORMS="cpu",
               PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]))  # the kernel's python
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute(
        env=env)

    images = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 2
    text = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", []))
    assert "8 multi-way utterances" in text and "layer 1: mean cosine" in text and "most similar first:" in text
    out = tmp_path / "tiny" / "analysis"
    for name in ("quadruplets.csv", "layer_similarity.csv", "layer_similarity.png", "language_similarity.csv",
                 "language_similarity.png"):
        assert (out / name).stat().st_size > 0
