"""Data: bundled offline domains, TFDS, image folders, samplers.

Importing this package is light (NumPy only); scikit-learn, PIL and
tensorflow_datasets are imported on first use, and TensorFlow never.
"""
