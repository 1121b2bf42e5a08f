"""Package metadata, read from settings.ini (nbdev 2 keeps one source of truth there)."""
from configparser import ConfigParser
import setuptools

cfg = ConfigParser(delimiters=['='])
cfg.read('settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
lic = licenses[cfg['license']]
words = lambda key: cfg.get(key, '').split()
# package data: folder in the package -> (folder in the checkout, files); grids.PACKAGE_DATA finds them
DATA = {'grids': ('grids', ['*.yaml']), 'templates': ('nbs/experiments', ['markov.ipynb', 'regression.ipynb']), 'reference': ('runs/quick', ['results.csv'])}  # the papermill templates sit beside the experiments notebooks

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    url=cfg['git_url'],
    license=lic[0],
    keywords=cfg['keywords'],
    classifiers=[f"Development Status :: {statuses[int(cfg['status']) - 1]}",
                 f"Intended Audience :: {cfg['audience']}",
                 f"License :: {lic[1]}",
                 'Natural Language :: English',
                 'Programming Language :: Python :: 3'],
    # the grids and the papermill template ship inside the package (markov_laplace/grids, markov_laplace/templates),
    # mapped from their folders in the checkout: nothing is copied into the generated markov_laplace/
    packages=setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']) + [f"{cfg['lib_name']}.{d}" for d in DATA],
    package_dir={f"{cfg['lib_name']}.{d}": src for d, (src, _) in DATA.items()},
    # the NLP harness's word-pair lists live inside the package itself (committed beside the generated tasks/nlp/ code)
    package_data={**{f"{cfg['lib_name']}.{d}": files for d, (_, files) in DATA.items()},
                  f"{cfg['lib_name']}.tasks.nlp": ['data/*.json', 'data/README.md']},
    include_package_data=True,
    python_requires=f">={cfg['min_python']}",
    install_requires=words('requirements'),
    extras_require={'dev': words('dev_requirements'), 'papermill': words('papermill_requirements'), 'gpu': words('gpu_requirements'),
                    'nlp': words('nlp_requirements')},
    entry_points={'console_scripts': words('console_scripts'),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    zip_safe=False,
)
