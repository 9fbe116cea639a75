"""How the test session spreads over processes (``tests/`` and ``notebooks/`` alike).

``pytest`` runs under pytest-xdist (``-n`` in ``pyproject.toml``) with ``--dist loadgroup``:
every test module is one group, so a module's fixtures are built once, in one process; all the
notebooks are one group, run in order in one process, because later chapters read what earlier
ones wrote (the smoke profile's results). ``pytest -n 0`` runs everything in one process.
"""

import pytest


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups into the test ids
def pytest_collection_modifyitems(config, items):
    notebooks = []
    for item in items:
        path = item.nodeid.split("::")[0]
        group = "notebooks" if path.endswith(".ipynb") else path
        notebooks.append(group == "notebooks")
        item.add_marker(pytest.mark.xdist_group(group))
    # the notebooks first: they are the longest group, so one process starts them while the others
    # share the modules (a group scheduled last would run alone at the end)
    items[:] = [i for i, nb in zip(items, notebooks) if nb] + [i for i, nb in zip(items, notebooks) if not nb]
