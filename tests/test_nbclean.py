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
    injected = nbformat.v4.new_code_cell("profile = 'default'\n")  # a new random id in every run
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# title", id="intro"), cell, injected]
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
    assert nb.cells[2]["id"] == "injected-parameters"
    assert not strip_run_times(a)  # nothing left to strip: the file is not rewritten


def test_missing_notebook_is_reported(tmp_path, capsys):
    assert main([str(tmp_path / "none.ipynb")]) == 1
    assert "no such notebook" in capsys.readouterr().err


def test_papermill_runs_give_the_same_file(tmp_path):
    """Two real papermill executions of one notebook differ until their run times are stripped."""
    import papermill

    src = tmp_path / "src.ipynb"
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("profile = 'smoke'", id="params")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("print(profile)", id="body")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, src)
    out = tmp_path / "out.ipynb"  # the pipeline writes each notebook to one path
    raw, clean = [], []
    for _ in range(2):
        papermill.execute_notebook(str(src), str(out), parameters={"profile": "default"}, kernel_name="python3",
                                   progress_bar=False)
        raw.append(out.read_bytes())
        strip_run_times(out)
        clean.append(out.read_bytes())
    assert raw[0] != raw[1] and clean[0] == clean[1]
    assert "default" in out.read_text()
