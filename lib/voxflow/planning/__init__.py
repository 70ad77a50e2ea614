"""From the stores to plans.json (rules split, fingerprint, plan): the dataset fingerprint, the plans (patch,
batch, topology, stem, cascade) read back through voxflow.planning.plans.Plans, and the cascade's resampling."""
