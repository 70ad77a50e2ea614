"""Post-processing of predicted label maps (largest component, small-component removal) and its decision on the
out-of-fold predictions (rule postprocess_plan)."""
