"""Training and distillation on the build side: RouteLLM's BERT and MF recipes (``classic``), the
transformer-tier teacher, the distilled fast tier, the cross-validation runner, training data.
"""
