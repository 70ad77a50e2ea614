"""Reading a cohort: input layouts (demo, folders, sheet, BIDS, BraTS, MSD), image formats and their readers, the
subject table (Cohort), missing modalities, and the per-subject validation of the raw files (rule validate)."""
