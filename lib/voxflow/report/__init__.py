"""The cohort report (rule report): the data it shows (data), its plots (plots), its sections for QC, the
configuration choice and synthesis, and the page itself from templates/ (build)."""
