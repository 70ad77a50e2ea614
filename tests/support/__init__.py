"""Helpers shared by the test modules (imported as `support.<module>`: pyproject.toml's [tool.pytest.ini_options]
puts tests/ on sys.path). Fixtures stay in the conftest.py files; what a single test module needs stays in it.

* paths: the project's folders and files (PROJECT, SCHEMA, SHARED_DATA, VENV_BIN)
* outputs: checks of what a run leaves behind (files_under, tmp_names_under, dice)
* workflow: Snakemake runs as a user runs them (run_snakemake, fail_msg, small_training_split,
  preprocessed_placeholders)
* learning: tiny synthetic zarr stores and plans for the learning stages
* report: the report page parsed through html.parser, and the config its tests build it with
* config_cases: the catalogue of config mistakes with their exact one-line messages
* bad_inputs: the catalogue of broken input files, as one sample-sheet cohort
* layouts: small images, DICOM series and sample sheets in the input layouts
* network: the sitecustomize guard that refuses network access
* ddp: the environment of torchrun processes
"""
