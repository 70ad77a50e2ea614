"""Training a fold (rule train): the loop, its losses, augmentation (spatial, intensity, MRI artefacts) and the
step that wires it to the rule."""
