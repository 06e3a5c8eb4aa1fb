"""Analysis: DT-visualization, and fidelity/diversity metrics in an offline feature space."""

from gen.analysis.dt import DTVisualizer
from gen.analysis.metrics import FeatureSpace, class_histogram, coverage, frechet_distance, mean_pairwise_distance, per_class_coverage

__all__ = ["DTVisualizer", "FeatureSpace", "class_histogram", "coverage", "frechet_distance", "mean_pairwise_distance", "per_class_coverage"]
