"""Data that ships inside packages, for training, tests and metrics: scikit-learn's digits and
scikit-image's IHC and retina images. Nothing here imports the rest of gen."""

from gen.data.dataset import TensorImageDataset
from gen.data.digits import digit_tokens, digits, digits_bold
from gen.data.tissue import CAPTIONS, embedding_grids, ihc_patches, random_patches, reference_image

__all__ = ["CAPTIONS", "TensorImageDataset", "digit_tokens", "digits", "digits_bold", "embedding_grids", "ihc_patches", "random_patches", "reference_image"]
