"""Executed notebooks lose their run times and nothing else."""

import nbformat

from dkolib.study.nbclean import main, strip_run_times


def _executed(path, t0: str, duration: float):
    """A notebook as papermill leaves it, run at ``t0``."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["papermill"] = {"start_time": t0, "end_time": t0, "duration": duration,
                                "parameters": {"profile": "default"}, "version": "2.7.0"}
    cell = nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")])
    cell.metadata["tags"] = ["parameters"]
    cell.metadata["execution"] = {"iopub.execute_input": t0, "shell.execute_reply": t0}
    cell.metadata["papermill"] = {"start_time": t0, "end_time": t0, "duration": duration, "status": "completed",
                                  "exception": False}
    nb.cells = [nbformat.v4.new_markdown_cell("# title", id="intro"), cell]
    cell["id"] = "params"  # ids come from the source notebook, the same in every run
    nbformat.write(nb, path)


def test_two_runs_give_the_same_file(tmp_path):
    a, b = tmp_path / "a.ipynb", tmp_path / "b.ipynb"
    _executed(a, "2026-12-02T03:49:33Z", 0.5)
    _executed(b, "2026-12-03T11:02:07Z", 0.9)
    assert a.read_bytes() != b.read_bytes()
    assert strip_run_times(a) and main([str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    nb = nbformat.read(a, as_version=4)
    cell = nb.cells[1]
    assert "execution" not in cell.metadata and cell.metadata["tags"] == ["parameters"]
    assert cell.metadata["papermill"] == {"status": "completed", "exception": False}
    assert nb.metadata["papermill"]["parameters"] == {"profile": "default"}
    assert cell.outputs[0]["text"] == "1\n"
    assert not strip_run_times(a)  # nothing left to strip: the file is not rewritten


def test_missing_notebook_is_reported(tmp_path, capsys):
    assert main([str(tmp_path / "none.ipynb")]) == 1
    assert "no such notebook" in capsys.readouterr().err
