"""Everything `nbdev_docs` does before it calls Quarto, without nbdev's attempt to download Quarto:
refresh nbs/nbdev.yml from settings.ini, rebuild the symbol index, check the sidebar, and process
the notebooks into _proc/ (the folder Quarto renders)."""
from pathlib import Path

import yaml
from nbdev.config import get_config
from nbdev.doclinks import _build_modidx
from nbdev.quarto import refresh_quarto_yml
from nbdev.serve import proc_nbs


def sidebar_files(sidebar):
    "Every notebook or page a sidebar.yml names."
    out = []
    def walk(items):
        for it in items:
            if isinstance(it, str): out.append(it)
            elif isinstance(it, dict):
                if 'href' in it: out.append(it['href'])
                walk(it.get('contents', []))
    walk(yaml.safe_load(Path(sidebar).read_text())['website']['sidebar']['contents'])
    return out


def main():
    cfg = get_config()
    nbs = cfg.nbs_path
    quarto = nbs / '_quarto.yml'
    assert quarto.exists() and quarto.resolve() == (cfg.config_path / '_quarto.yml').resolve(), \
        'nbs/_quarto.yml must be the link to the top-level _quarto.yml'
    refresh_quarto_yml()
    _build_modidx()
    missing = [f for f in sidebar_files(nbs / 'sidebar.yml') if not (nbs / f).exists()]
    assert not missing, f'sidebar.yml names pages that do not exist: {missing}'
    print('processed notebooks into', proc_nbs())


if __name__ == '__main__': main()
