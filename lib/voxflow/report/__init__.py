"""The cohort report (rule report): the data it shows (data), its plots (plots), its sections for QC, the
configuration choice and synthesis, and the page itself from templates/ (build)."""


def __getattr__(name: str):
    """`from voxflow.report import write_shown_subjects`, as the report_subjects rule's run block has always
    written it (a run block's text is its rule's rerun trigger): imported when asked for, so that importing the
    package stays cheap."""
    if name == "write_shown_subjects":
        from voxflow.report.build import write_shown_subjects

        return write_shown_subjects
    raise AttributeError(f"module 'voxflow.report' has no attribute {name!r}")
