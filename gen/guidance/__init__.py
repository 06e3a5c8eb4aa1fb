"""Value-based guidance without gradients: rewards, values, and search strategies as transition hooks.

>>> from gen.guidance import SVDD, PosteriorMeanValue, classifier_log_prob
>>> hook = SVDD(PosteriorMeanValue(classifier_log_prob(classifier, target=3)), num_candidates=4)
>>> out = pipe(batch_size=8, eta=1.0, hooks=[hook]); out.nfe, out.reward_calls
"""

from gen.guidance.gradient import ClassifierGuidance, RewardGradientGuidance
from gen.guidance.particles import BestOfN, FKSteering
from gen.guidance.rewards import classifier_log_prob, embedding_similarity, jpeg_compressibility
from gen.guidance.svdd import SVDD
from gen.guidance.values import LearnedValue, PosteriorMeanValue, RewardError, ValueNetwork

__all__ = [
    "ClassifierGuidance",
    "RewardGradientGuidance",
    "SVDD",
    "BestOfN",
    "FKSteering",
    "LearnedValue",
    "PosteriorMeanValue",
    "RewardError",
    "ValueNetwork",
    "classifier_log_prob",
    "embedding_similarity",
    "jpeg_compressibility",
]
