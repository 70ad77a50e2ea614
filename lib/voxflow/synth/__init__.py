"""Missing-modality synthesis: a 3D conditional GAN (one generator for every missing pattern, as CollaGAN).

- :mod:`voxflow.synth.model`: generator (the project's U-Net), its input, availability draws, PatchGAN, losses;
- :mod:`voxflow.synth.train`: ``train_synthesis`` on a cohort's complete stores, ``load_generator``;
- :mod:`voxflow.synth.infer`: ``synthesize`` the missing channels of one volume (sliding window);
- :mod:`voxflow.synth.metrics`: PSNR, SSIM, MAE inside the brain mask, and a figure.
"""
