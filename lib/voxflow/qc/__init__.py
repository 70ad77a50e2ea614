"""Quality control: the quality scores the preprocessing steps compute (subject), their definitions and bad
directions (scores), the QC figures (figures) and the cohort's flags (cohort, rule qc_flags)."""
