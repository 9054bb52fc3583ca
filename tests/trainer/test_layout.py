"""Guards for the package layout (see the comment in pyproject.toml)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_operator_folder_never_shadows_the_stdlib():
    # operator/ must stay a namespace folder: an __init__.py there makes `python -m ...` run from the
    # checkout import it instead of the standard library's `operator` module, and Python cannot start.
    assert not (ROOT / "operator" / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, "-c", "import operator, trainbench.operator.plan; print(operator.__file__)"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert not Path(out.stdout.strip()).is_relative_to(ROOT)  # the stdlib's operator.py, not ours


def test_operator_side_does_not_import_torch():
    code = "import sys, trainbench.operator.plan, trainbench.trainer.contract; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
