"""The per-subject chain as data (its steps, files and order), the runner of one subject's chain in one job, the
step table (`voxflow step NAME` -> function) and the status files of subjects and cohort."""
