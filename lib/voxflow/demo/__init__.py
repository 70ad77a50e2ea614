"""The built-in demo cohorts: synthetic brain MRI (mri) with realistic faults (faults), torso CT (ct), and
synthetic stores for tests and benches."""
