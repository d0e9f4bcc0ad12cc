"""Training stages: the GAN (trainables.gan), the classifier (trainables.classifier) and their metrics.

Training loops here never import Ray: they take a `report` callable (a list's append in tests,
`ray.train.report` / `ray.tune.report` in workers). Ray lives in each stage's entry point.
"""
