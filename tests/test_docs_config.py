"""The docs site is configured for everything up to Quarto's render."""
import configparser
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip('nbdev')  # the docs tools need nbdev (not on the GPU machine)
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from prepare_docs import sidebar_files  # noqa: E402


def test_quarto_config_is_linked_and_parses():
    link = ROOT / 'nbs' / '_quarto.yml'
    assert link.is_symlink() and link.resolve() == (ROOT / '_quarto.yml').resolve()
    q = yaml.safe_load((ROOT / '_quarto.yml').read_text())
    assert q['project']['type'] == 'website' and 'sidebar.yml' in q['metadata-files']


def test_sidebar_lists_every_notebook_and_nothing_else():
    listed = set(sidebar_files(ROOT / 'nbs' / 'sidebar.yml'))
    present = {str(p.relative_to(ROOT / 'nbs')) for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in str(p)}
    assert listed == present, (listed - present, present - listed)


def test_settings_keep_papermill_tags_and_docs_keys():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    d = cfg['DEFAULT']
    assert d['allowed_cell_metadata_keys'] == 'tags'
    for key in ('title', 'doc_host', 'doc_baseurl', 'git_url', 'custom_sidebar', 'lib_name'):
        assert d.get(key), key
    assert d['lib_name'] == 'markov_laplace' and d['custom_sidebar'] == 'True'


def test_readme_has_the_two_commands():
    text = (ROOT / 'README.md').read_text()
    assert 'make run' in text and 'make test' in text
