"""The top-level API: every name ``haq`` exports resolves, and ``haq.run_search`` stays the
search function after the ``haq.search`` subpackage is imported (``haq.search`` was once the
function on first access and the package afterwards)."""

import importlib

import haq


def test_every_exported_name_resolves():
    for name in haq.__all__:
        assert getattr(haq, name) is not None, name


def test_run_search_after_the_search_package_is_imported(tiny_ckpt, tmp_path):
    importlib.import_module("haq.search.runner")
    from tests.test_search import tiny_cfg

    assert callable(haq.run_search)
    summary = haq.run_search(tiny_cfg(tiny_ckpt, episodes=3), tmp_path / "run", progress=False)
    assert summary["episodes"] == 3
    assert (tmp_path / "run" / "best_policy.json").is_file()
    assert haq.Policy.load(tmp_path / "run" / "best_policy.json").names
