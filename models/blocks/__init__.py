"""The building blocks the methods share, each a module: ``networks`` (MLPs, Gaussians, the pixel
likelihoods), ``convnets`` (weight normalisation with data-dependent initialisation, the ResNet and
DenseNet encoders), ``flows`` (Householder, MADE, IAF, the autoregressive prior's step),
``mixtures`` (Gaussian mixtures as one distribution, amortized mixture posteriors), ``pixelcnn``
(gated PixelCNN with a set receptive field), ``pixelcnn_pp`` (PixelCNN++) and ``optim`` (the
default optimizer, schedules, moving average). None registers a method."""
